"""The Python API: a fine-tuned model annotating in this process, no cluster, the same stage code as `annotate`.

    import nlpbatch

    tagger = nlpbatch.load("runs/ner")                  # the task comes from the model
    tagger("Angela Merkel visited Paris.")              # -> {"id": "0", "entities": [...], "n_tokens": 8}
    tagger(["First text.", "Second text."])             # -> [row, row]
    tagger(table)                                       # pyarrow Table / pandas DataFrame with a `text` column
    reader = nlpbatch.load("runs/qa")
    reader("Paris is the capital of France.", question="What is the capital of France?")
    pairs = nlpbatch.load("runs/mrpc")                  # a sentence-pair classifier
    pairs("The cat sat.", text_pair="A cat was sitting.")  # a table: its own second-text column (the card's)

A row that cannot be annotated (an empty text, say) comes back with `reject`: the reason, as the rejects of
`annotate` say it. Settings are `annotate`'s (`max_length`, `stride`, `backend`, `aggregation`, `null_threshold`,
...). The model is loaded once, by `load`.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from nlpbatch.engines.openvino_engine import CALIBRATION_EXAMPLES

INTERNAL = ("source", "line", "_input", "_reject")


class Model:
    """A loaded model: call it on a string, a list of strings, or a table. See the module docstring."""

    def __init__(self, cfg, model_path: str, own_columns: bool = False, command: str = ""):
        """`cfg`: an AnnotateConfig (unset settings the model card holds are taken from it); `model_path`: the local
        model dir; `own_columns`: raw JSONL lines in `cfg`'s columns go to `annotate_lines`; `command`: the CLI
        command a task mismatch's error names (else load's task=)."""
        from nlpbatch.annotate.local_runner import in_process_annotator, second_column
        from nlpbatch.model_card import card_defaults
        from nlpbatch.tasks import get_task, require_task

        require_task(cfg.model, model_path, cfg.task, command)  # before a head of the wrong shape fails deep inside
        cfg = card_defaults(cfg, model_path)
        self.task, self.cfg = get_task(cfg.task), cfg
        # a sentence-pair classifier's second text: the column it was trained with (its card), or text_pair=
        self.pair_column = None if self.task.pair else second_column(cfg, None)
        from nlpbatch.model_card import read_card

        self.trained_text_column = read_card(model_path).get("text_column")  # a table's text column, if not `text`
        self._annotator = in_process_annotator(cfg, model_path, own_columns)

    @property
    def needs_second(self) -> str | None:
        """What a row's second input is called, when the model needs one: "question" (QA) or "text_pair"."""
        return "question" if self.task.pair else ("text_pair" if self.pair_column else None)

    def annotate(self, texts: list[str], questions: list[str] | None = None, ids: list[str] | None = None) -> list:
        """One output row per text, in order (rejects included, with `reject`: the reason)."""
        from nlpbatch.annotate.local_runner import annotate_rows

        second = self.needs_second
        if questions is not None and len(questions) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(questions)} {second or 'second text'}s")
        if second and questions is None:
            column = self.cfg.question_column if self.task.pair else self.pair_column
            raise ValueError(
                f"a {'QA' if self.task.pair else 'sentence-pair'} model needs a {second.replace('_', ' ')} per text: "
                f"model(text, {second}=...), or a table with a {column!r} column"
            )
        return [_clean(row) for row in annotate_rows(self._annotator, texts, questions, ids)]

    def annotate_lines(self, lines: list[bytes]) -> list[dict]:
        """JSONL input lines (in the configured columns) -> output rows, as `annotate` would write them."""
        from nlpbatch.annotate.local_runner import output_rows

        table = self._annotator(pa.table({"raw": pa.array(lines, pa.binary()), "line": range(1, len(lines) + 1)}))
        return [{"line": row["line"], **_clean(row)} for row in output_rows(table)]

    def __call__(self, data, question: str | list[str] | None = None, text_pair: str | list[str] | None = None):
        """`question`: QA's question(s); `text_pair`: a sentence-pair classifier's second text(s)."""
        second = question if question is not None else text_pair
        if isinstance(data, str):
            return self.annotate([data], None if second is None else [second])[0]
        if isinstance(data, list):
            seconds = [second] * len(data) if isinstance(second, str) else second
            return self.annotate(data, seconds)
        return self._table(data, second)

    def _table(self, data, question):
        """A pyarrow Table or pandas DataFrame with the text column (and a question column, or `question`): the
        same table with the output columns appended (and `reject`)."""
        was_pandas = not isinstance(data, pa.Table)
        table = pa.Table.from_pandas(data, preserve_index=False) if was_pandas else data
        column = self.cfg.text_column
        if column not in table.column_names and self.trained_text_column in table.column_names:
            column = self.trained_text_column  # the column the model was trained on (its card)
        if column not in table.column_names:
            trained = self.trained_text_column
            also = f" or {trained!r} (the column it was trained on)" if trained and trained != column else ""
            raise ValueError(
                f"no column {column!r}{also} (columns: {', '.join(table.column_names)}); pass text_column="
            )
        questions = None
        name = self.cfg.question_column if self.task.pair else self.pair_column
        if name:  # the row's own second column (QA's question, a pair model's second text), else the argument
            questions = table.column(name).to_pylist() if name in table.column_names else question
            questions = [questions] * table.num_rows if isinstance(questions, str) else questions
        rows = self.annotate(table.column(column).to_pylist(), questions)
        for name in [*self.task.output_columns, "reject"]:
            if name != "question" or name not in table.column_names:
                table = table.append_column(name, pa.array([row.get(name) for row in rows]))
        return table.to_pandas() if was_pandas else table


def _clean(row: dict) -> dict:
    """An output row as `annotate` writes it (kept input columns under their own names), `reject` if rejected."""
    reason = row.get("_reject")
    row = {k.removeprefix("_keep_"): v for k, v in row.items() if k not in INTERNAL}
    return {**row, "reject": reason} if reason else row


def load(model: str, task: str | None = None, **settings: Any) -> Model:
    """A fine-tuned model (a local dir or a hub id) ready to annotate in this process; `settings` are `annotate`'s
    (max_length, stride, backend, aggregation, null_threshold, text_column, ...)."""
    from nlpbatch.config import ConfigError, load_annotate_config
    from nlpbatch.models import local_model_path
    from nlpbatch.tasks import task_of_model

    path = local_model_path(model)
    task = task or task_of_model(path)
    if task is None:
        raise ConfigError(f"{model}: no task in its model card or architecture; pass task=")
    cfg = load_annotate_config(task=task, model=model, input="-", output="-", **settings)
    return Model(cfg, path)  # a model of another task than `task` is refused there


def export(
    model: str,
    quantize: str | None = "int8",
    calibration_data: str | None = None,
    calibration_examples: int = CALIBRATION_EXAMPLES,
) -> dict[str, str]:
    """What `nlpbatch export` does: the fp32 ONNX file and, with quantize="int8", ONNX Runtime's dynamic int8 and,
    when OpenVINO is installed and calibration data is at hand (`calibration_data`, else the training data recorded
    in MODEL/metrics.json; its first `calibration_examples`), OpenVINO's static int8. Returns the files written, by
    backend kind."""
    import json
    from pathlib import Path

    from nlpbatch.engines import ONNX_DIR, export_onnx
    from nlpbatch.engines.choice import AGREEMENT_FILE, measure_agreement
    from nlpbatch.engines.openvino_engine import available
    from nlpbatch.evaluation import calibration_inputs
    from nlpbatch.models import resolve_model
    from nlpbatch.progress import say
    from nlpbatch.tasks import task_of_model

    calibration = None
    if quantize == "int8":
        found = calibration_inputs(model, calibration_data, calibration_examples)
        if found:
            calibration, source = found
            say(f"export: calibration data (OpenVINO int8, agreement): {len(calibration)} windows of {source}")
        elif available():
            say("export: OpenVINO int8 skipped: no calibration data (pass --calibration-data, e.g. the training file)")
    written = export_onnx(model, quantize, calibration=calibration if available() else None)
    record = Path(resolve_model(model)) / ONNX_DIR / AGREEMENT_FILE
    record.unlink(missing_ok=True)  # never the measure of earlier weights
    if calibration:
        # how often each int8 engine predicts what torch fp32 does: `--backend auto` races only those close enough
        measured = measure_agreement(task_of_model(resolve_model(model)), resolve_model(model), calibration, written)
        record.write_text(json.dumps(measured, indent=2))
        say("export: agreement with torch: " + ", ".join(f"{b} {m['agreement']:.2%}" for b, m in measured.items()))
    return written
