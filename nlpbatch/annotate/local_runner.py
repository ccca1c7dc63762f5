"""The local runner: the Ray runner's read, fused stages and sink in this process, one engine thread per core,
without a cluster's start-up (`AnnotateConfig.local` says when); and the same stages for a few texts
(`annotate_texts`, `annotate --text`, `nlpbatch.load`)."""

from __future__ import annotations

import json
import os
import threading
import time

from nlpbatch.annotate.plan import Plan, annotator_args, parse_options, read_questions, second_column
from nlpbatch.config import AnnotateConfig
from nlpbatch.model_card import card_defaults
from nlpbatch.models import local_model_path
from nlpbatch.progress import Progress, progress_mode, say


def start(cfg: AnnotateConfig) -> None:
    """Nothing to start: no cluster."""


class _Progress:
    """Rows annotated out of the counted rows_in, with ETA and tokens/s, told by the runner for each batch."""

    def __init__(self, cfg: AnnotateConfig, rows_in: int):
        from nlpbatch.annotate.predictors import RowCounter

        self.bar = Progress(f"annotate {cfg.task}", rows_in, "rows", progress_mode(cfg.quiet))
        self.totals = RowCounter()

    def done(self, batch) -> None:
        from nlpbatch.annotate.predictors import count_done

        count_done(batch, self.totals)
        rows, rejected, tokens = self.totals.totals()
        elapsed = time.perf_counter() - self.bar.t0
        self.bar.update(rows - self.bar.n, rejected=rejected, tokens=f"{tokens / elapsed:,.0f}/s")

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close(quiet_too=False)  # the run says its own summary next


def stream(cfg: AnnotateConfig, plan: Plan, in_fs, sink) -> None:
    """Every input row through the stages into `sink` (its `results` then say what was written)."""
    with _Progress(cfg, plan.rows_in) as progress:
        stream_here(cfg, plan, in_fs, sink, progress)


def stream_here(cfg: AnnotateConfig, plan: Plan, in_fs, sink, progress: _Progress) -> None:
    """The local runner: the streaming job's read, fused stages and sink in this process. One engine thread per
    core, each with its own engine session and tokenizer (ONNX Runtime, torch and the Rust tokenizer release the
    GIL), annotating batches side by side; the results are written in input order, a file of about rows_per_file
    rows at a time, with a bounded number of batches in flight (memory stays bounded for any input)."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor
    from types import SimpleNamespace

    from nlpbatch.annotate.predictors import Annotator
    from nlpbatch.annotate.reader import read_file

    workers = cfg.max_actors or max(1, os.cpu_count() or 1)
    say(f"annotate {cfg.task}: {plan.rows_in} rows, run in this process on {workers} threads (--runner ray: a cluster)")
    parse = parse_options(cfg, plan.fmt, plan.question_column, plan.questions)
    # one engine thread each: the threads run batches side by side, as the actors of a cluster do
    options = annotator_args(cfg, plan.model_path, plan.model_config, parse, threads=1)
    mine = threading.local()

    def annotate(batch):
        if not hasattr(mine, "annotator"):  # loaded once per thread
            mine.annotator = Annotator(**options)
        return mine.annotator(batch)

    columns = list(dict.fromkeys([*plan.required, *cfg.kept]))
    batch_rows = cfg.rows_per_batch(plan.rows_in, workers)
    sink.on_write_start()
    results, pending, running = [], [], deque()

    def write() -> None:  # one output file (and one of rejects) of the pending batches
        results.append(sink.write(pending, SimpleNamespace(task_idx=len(results))))
        pending.clear()

    def finish(keep: int) -> None:
        """Collect annotated batches, oldest first, until at most `keep` are in flight; write full files."""
        while len(running) > keep:
            pending.append(running.popleft().result())
            progress.done(pending[-1])
            if sum(t.num_rows for t in pending) >= cfg.rows_per_file:
                write()

    with ThreadPoolExecutor(workers, thread_name_prefix="nlpbatch-annotate") as pool:
        try:
            for path in plan.files:
                for block in read_file(plan.fmt, in_fs, path, columns, cfg.csv_max_value_lines):
                    for start in range(0, block.num_rows, batch_rows):
                        running.append(pool.submit(annotate, block.slice(start, batch_rows)))
                        finish(2 * workers)
            finish(0)
        except BaseException:  # a failure or a stop: batches not started are dropped, running ones end
            pool.shutdown(cancel_futures=True)
            raise
    if pending:
        write()
    sink.results = results


def in_process_annotator(cfg: AnnotateConfig, model_path: str, own_columns: bool = False, raw_scores: bool = False):
    """The fused layout's Annotator (parse -> tokenize -> predict -> decode, the stage functions of the streaming
    job) for this process, over JSONL rows `{"id", "text"(, "question")}` (`own_columns`: the columns `cfg`
    names, kept columns too); the engine is loaded once, here."""
    from transformers import AutoConfig

    from nlpbatch.annotate.predictors import Annotator

    questions = read_questions(cfg.questions)
    question_column = second_column(cfg, questions)
    question_column = question_column if own_columns or question_column is None else "question"
    parse = parse_options(cfg, "jsonl", question_column, questions)
    if not own_columns:
        parse = {**parse, "id_column": "id", "text_column": "text", "keep": []}
    # threads None: the engine's own thread count, all of this process's cores
    config = AutoConfig.from_pretrained(model_path)
    return Annotator(**annotator_args(cfg, model_path, config, parse, threads=None, raw_scores=raw_scores))


def annotate_rows(annotator, texts: list[str], questions: list[str] | None = None, ids: list[str] | None = None):
    """Output rows (rejects included, internal columns too) of texts run through an in-process annotator."""
    import pyarrow as pa

    ids = ids or [str(i) for i in range(len(texts))]
    lines = [
        json.dumps({"id": i, "text": t, **({"question": questions[n]} if questions else {})}).encode()
        for n, (i, t) in enumerate(zip(ids, texts))
    ]
    return output_rows(annotator(pa.table({"raw": pa.array(lines, pa.binary())})))


def output_rows(table) -> list[dict]:
    """An in-process annotator's output as rows, without the per-stage timing columns."""
    return table.select([c for c in table.column_names if not c.startswith("_sec_")]).to_pylist()


def annotate_texts(
    cfg: AnnotateConfig, texts: list[str], questions: list[str] | None = None, raw_scores: bool = False
) -> list[dict]:
    """The streaming job's stages in this process, without Ray: the single-process reference for the streaming
    job. Returns one output row per text (rejects included); `raw_scores`: without the card's calibrator."""
    model_path = local_model_path(cfg.model, cfg.s3_endpoint)
    cfg = card_defaults(cfg, model_path)
    return annotate_rows(in_process_annotator(cfg, model_path, raw_scores=raw_scores), texts, questions)
