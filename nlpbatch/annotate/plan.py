"""The plan of an annotation run, settled before any model or Ray work and shared by both runners: the input files
and their format, the rows they hold (counted with the reader's own line splitter, so the manifest reconciles), the
columns each row needs, the questions, and the model as a local dir; every mistake a run could make late (a missing
column, an output inside the input, a model of another task) fails here, in seconds. `annotator_args` is the one
place the config becomes the fused stages' settings (an actor, a local thread, `nlpbatch.load`)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nlpbatch.annotate.reader import check_parquet, iter_lines
from nlpbatch.config import AnnotateConfig, ConfigError
from nlpbatch.model_card import card_defaults
from nlpbatch.models import local_model_path
from nlpbatch.progress import say
from nlpbatch.storage import (
    check_reachable,
    filesystem_for,
    format_of,
    input_root,
    list_input_infos,
    overlap,
)
from nlpbatch.tasks import get_task, require_task

COUNT_NOTICE_BYTES = 256 * 2**20  # inputs past this get a line before their rows are counted


def check_inputs(
    files: list[str],
    fmt: str,
    filesystem,
    columns: list[str],
    id_column: str,
    kept: list[str] = (),
    hints: dict[str, str] | None = None,
) -> int:
    """Fail fast on a file that lacks a required or kept column; return the number of input rows, counted with
    the same line splitter the read uses (the manifest's reconciliation). `hints`: per required column, the
    option that names it, for the error."""
    rows = 0
    for path in files:
        if fmt == "parquet":
            rows += check_parquet(filesystem, path, columns, optional=(id_column,), present=kept, hints=hints)
            continue
        if fmt == "csv":
            rows += _check_csv(filesystem, path, columns, kept, hints)
            continue
        wanted = list(dict.fromkeys([*columns, *kept]))
        sample: list[dict] = []
        try:
            with filesystem.open_input_stream(path, compression="detect") as fh:
                for _, line in iter_lines(fh):
                    rows += 1
                    if len(sample) < SAMPLE_RECORDS:
                        record = _record(line)
                        if record is not None:
                            sample.append(record)
        except ConfigError:
            raise
        except Exception as err:  # a truncated .gz, a file deleted meanwhile: name the file
            raise ConfigError(f"{path}: cannot be read ({type(err).__name__}: {err}); fix or remove the file") from err
        _check_keys(path, sample, wanted, hints or {})
    return rows


def _check_csv(filesystem, path: str, columns: list[str], kept: list[str], hints: dict[str, str] | None) -> int:
    """A CSV / TSV file's data rows (counted by the reader the read uses), after its header is checked for the
    required and kept columns as a Parquet file's are."""
    from nlpbatch.annotate.reader import csv_header, csv_tables, require_columns

    try:
        with filesystem.open_input_stream(path) as fh:
            header = csv_header(fh, path)
        require_columns(path, header, columns, kept, hints)
        with filesystem.open_input_stream(path) as fh:
            return sum(t.num_rows for t in csv_tables(fh, path, header, columns[:1]))
    except ConfigError:
        raise
    except Exception as err:  # pyarrow's parse errors: name the file
        raise ConfigError(f"{path}: cannot be read as CSV ({type(err).__name__}: {err}); fix or remove it") from err


SAMPLE_RECORDS = 1000  # JSON objects per file looked at for the columns


def _record(line: bytes) -> dict | None:
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return record if isinstance(record, dict) else None


def _check_keys(path: str, sample: list[dict], columns: list[str], hints: dict[str, str]) -> None:
    """A column that none of the file's first records has is a config error (a wrong --text-column), not 10^6
    rejects; a record that lacks it while others have it is a reject (or, for a kept column, a null), wherever it
    stands in the file."""
    missing = [column for column in columns if sample and not any(column in record for record in sample)]
    if missing:  # every missing column at once, each with the option that names it
        keys = " or ".join(repr(c) for c in missing)
        fixes = "; ".join(dict.fromkeys(hints.get(c, "check --keep-columns") for c in missing))
        raise ConfigError(
            f"{path}: none of its first {len(sample)} records has a {keys} key (keys of the first: "
            f"{', '.join(sample[0])}); {fixes}"
        )


def _columns(fmt: str, filesystem, path: str) -> set[str]:
    """The columns (keys) of an input file, from its schema, header or first record; empty when unreadable."""
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            with filesystem.open_input_file(path) as fh:
                return set(pq.ParquetFile(fh).schema_arrow.names)
        with filesystem.open_input_stream(path, compression="detect") as fh:
            if fmt == "csv":
                from nlpbatch.annotate.reader import csv_header

                return set(csv_header(fh, path))
            for _, line in iter_lines(fh):
                return set(_record(line) or {})
    except Exception:  # a hint only: the checks above have named any real problem
        return set()
    return set()


def read_questions(path: str | None) -> list[str] | None:
    if path is None:
        return None
    questions = [q.strip() for q in Path(path).read_text(encoding="utf-8").splitlines() if q.strip()]
    if not questions:
        raise ConfigError(f"{path}: no questions (one per line)")
    return questions


def same_input(a: str | None, b: str) -> bool:
    """`in/`, `in` and `./in` name one input."""
    if a is None:
        return False
    if a.startswith("s3://") or b.startswith("s3://"):
        return a.rstrip("/") == b.rstrip("/")
    return os.path.normpath(a) == os.path.normpath(b)


def _check_overlap(cfg: AnnotateConfig, in_fs, in_path: str, out_fs, out_path: str) -> None:
    """An output inside the input is read back by the next run; an input inside the output is published over."""
    if type(in_fs) is not type(out_fs):
        return
    inputs, output = input_root(in_fs, in_path), out_path
    if not cfg.input.startswith("s3://"):
        inputs, output = os.path.realpath(inputs), os.path.realpath(output)
    if overlap(inputs, output):
        raise ConfigError(
            f"--output {cfg.output} and --input {cfg.input} overlap (one lies inside the other): a run would read its "
            "own output, or publish over its input. Write the output to a folder outside the input"
        )


@dataclass(frozen=True)
class Plan:
    """Everything a run settles before any Ray work: what it reads, how many rows that is, and with which model."""

    infos: list  # the input files (pyarrow FileInfo), in reading order
    fmt: str  # "jsonl" | "parquet"
    questions: list[str] | None  # --questions: every document asked each of them
    question_column: str | None  # pair tasks without --questions: the row's own question
    required: list[str]  # the columns every row needs
    rows_in: int  # output rows the run must account for (input rows x questions)
    model_path: str  # the local model dir (a hub id fetched once here)
    model_config: Any  # its transformers config

    @property
    def files(self) -> list[str]:
        return [info.path for info in self.infos]


def plan_annotation(cfg: AnnotateConfig) -> Plan:
    """Resolve and check a run without Ray: the input files and their one format, the required columns (present in
    every file), the counted rows, the model and its card (a model of another task is refused). Everything that can
    fail before model work fails here, in seconds, naming the file or option at fault."""
    from transformers import AutoConfig

    from nlpbatch.annotate import stages

    for uri in (cfg.input, cfg.output):
        check_reachable(uri, cfg.s3_endpoint)  # seconds, not the SDK's minutes of retries
    in_fs, in_path = filesystem_for(cfg.input, cfg.s3_endpoint)
    _check_overlap(cfg, in_fs, in_path, *filesystem_for(cfg.output, cfg.s3_endpoint))
    infos = list_input_infos(cfg.input, in_fs, in_path, cfg.input_format, cfg.follow_symlinks)
    formats = {cfg.input_format or format_of(info.path) for info in infos}
    if len(formats) != 1:
        raise ConfigError(f"{cfg.input}: mixed input formats {sorted(formats)}; pass --input-format or split them")
    fmt = formats.pop()
    task = get_task(cfg.task)
    model_path = local_model_path(cfg.model, cfg.s3_endpoint)
    cfg = card_defaults(cfg, model_path)  # a pair model's second column is the card's unless given
    questions = read_questions(cfg.questions)
    question_column = second_column(cfg, questions)
    required = [cfg.id_column, cfg.text_column] + ([question_column] if question_column else [])
    hints = {cfg.id_column: "set --id-column", cfg.text_column: "set --text-column"}
    if question_column and task.pair:
        hints[question_column] = "set --question-column, or ask every document the same questions with --questions FILE"
    elif question_column:
        hints[question_column] = "the model classifies sentence pairs: set --text-pair-column"
    size = sum(max(i.size or 0, 0) for i in infos)
    if size > COUNT_NOTICE_BYTES:  # reading every file to count its rows takes more than a few seconds
        say(f"annotate {cfg.task}: counting the rows of {len(infos)} input file(s), {size / 2**20:,.0f} MiB")
    rows_in = check_inputs([i.path for i in infos], fmt, in_fs, required, cfg.id_column, cfg.kept, hints)
    rows_in *= len(questions) if questions else 1
    if questions and task.pair and cfg.question_column in _columns(fmt, in_fs, infos[0].path):
        say(
            f"annotate {cfg.task}: --questions asks every row the file's {len(questions)} question(s); the input's "
            f"own {cfg.question_column!r} column is not used (drop --questions to ask each row its own)"
        )
    if rows_in == 0 and not cfg.allow_empty:
        raise ConfigError(
            f"{cfg.input}: no rows to annotate ({len(infos)} file(s), all empty); pass --allow-empty to publish an "
            "empty output"
        )
    require_task(cfg.model, model_path, cfg.task)
    model_config = AutoConfig.from_pretrained(model_path)
    stages.get_tokenizer(model_path)  # an unreadable tokenizer fails here, before any Ray work
    return Plan(infos, fmt, questions, question_column, required, rows_in, model_path, model_config)


def second_column(cfg: AnnotateConfig, questions: list[str] | None) -> str | None:
    """The input column of a row's second input: a QA question (unless --questions asks every document the same
    ones), or the second text of a sentence pair (`text_pair_column`, for a model trained on pairs)."""
    if get_task(cfg.task).pair:
        return cfg.question_column if questions is None else None
    return cfg.text_pair_column or None  # "": single texts, even for a pair model


def parse_options(cfg: AnnotateConfig, fmt: str, question_column: str | None, questions: list[str] | None) -> dict:
    """`stages.parse_rows`' keyword arguments."""
    return {
        "second": "question" if get_task(cfg.task).pair else "text pair",
        "fmt": fmt,
        "id_column": cfg.id_column,
        "text_column": cfg.text_column,
        "question_column": question_column,
        "questions": questions,
        "max_chars": cfg.max_chars,
        "keep": cfg.kept,
    }


def annotator_args(
    cfg: AnnotateConfig, model_path: str, model_config, parse: dict, threads: int | None, raw_scores: bool = False
) -> dict:
    """`predictors.Annotator`'s keyword arguments for this config: the fused stages in an actor, a thread of the
    local runner or the caller's process."""
    return {
        "task": cfg.task,
        "model_path": model_path,
        "batch_tokens": cfg.tokens_per_batch,
        "backend": cfg.backend,
        "threads": threads,
        "packing": cfg.packing,
        "parse": parse,
        "tokenize": {"max_length": cfg.window, "stride": cfg.stride, "words": cfg.words},
        "decode": decode_settings(cfg, model_path, model_config, raw_scores),
    }


def decode_settings(cfg: AnnotateConfig, model_path: str, model_config, raw_scores: bool = False) -> dict:
    """The task's decode options, with the score calibrator the model card keeps (unless `raw_scores`: what a new
    calibration is fitted to)."""
    from nlpbatch.model_card import read_card

    options = get_task(cfg.task).decode_options(cfg, model_config)
    calibrated = None if raw_scores else read_card(model_path).get("score_calibration")
    if not calibrated:
        return options
    threshold = (calibrated.get("target_precision") or {}).get("threshold")
    return {**options, "calibration": calibrated["calibrator"], **({"min_score": threshold} if threshold else {})}
