"""The Ray runner: the corpus streamed through Ray Data on a cluster (joined or started), read (CPU tasks) ->
[parse -> tokenize -> predict -> decode] with predict in an actor pool, into the run's sink. The other runner,
`local_runner`, runs the same stages and sink in this process; `pipeline.run_annotation` picks one
(`AnnotateConfig.local`) and does the rest (lease, reconcile, publish)."""

from __future__ import annotations

import logging
import os
import threading
import time

from nlpbatch.annotate.plan import Plan, annotator_args, decode_settings, parse_options
from nlpbatch.config import AnnotateConfig
from nlpbatch.progress import Progress, progress_mode
from nlpbatch.tasks import get_task


def start(cfg: AnnotateConfig) -> None:
    """Join the cluster (RAY_ADDRESS) or start a local one, with a CPU token beyond the actors' for the read and
    write tasks."""
    from nlpbatch.raycluster import ensure_ray

    ensure_ray(int((cfg.max_actors or os.cpu_count() or 1) * cfg.cpus_per_actor) + 1)


def stream(cfg: AnnotateConfig, plan: Plan, in_fs, sink) -> None:
    """Every input row through the stages into `sink` (its `results` then say what was written)."""
    with _Progress(cfg, plan.rows_in) as progress:
        build_dataset(cfg, plan, in_fs, progress.counter).write_datasink(sink)


def decode_and_count(batch, decode, counter, **options):
    """The split layout's decode task, which also tells the progress counter what it finished."""
    from nlpbatch.annotate.predictors import count_done

    return count_done(decode(batch, **options), counter)


class _Progress:
    """Around the streaming write: rows annotated out of the counted rows_in, with ETA and tokens/s (a bar on a
    terminal, a line every 30 s otherwise, nothing with --quiet), counted where the rows are annotated (the
    inference actors, or the decode tasks after them), not where they are written: the writer bundles rows into
    large files and would report them all at the end. Ray Data's own per-operator status is turned off: in a log
    it is a 10-line block every 10 s that never knows the total."""

    def __init__(self, cfg: AnnotateConfig, rows_in: int):
        import ray

        self.mode, self.stop = progress_mode(cfg.quiet), threading.Event()
        self.bar = Progress(f"annotate {cfg.task}", rows_in, "rows", self.mode)
        self.counter = None

        ray.data.DataContext.get_current().enable_progress_bars = False
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "bars disabled" notice
        if self.mode != "quiet":
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            # on the driver's node: a lost worker node must not take the job's progress with it
            here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
            from nlpbatch.annotate.predictors import RowCounter

            self.counter = ray.remote(num_cpus=0, scheduling_strategy=here)(RowCounter).remote()
        self.thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self.stop.wait(1.0):
            self._refresh()

    def _refresh(self) -> None:
        import ray

        try:
            rows, rejected, tokens = ray.get(self.counter.totals.remote(), timeout=30)
        except (ray.exceptions.RayError, TimeoutError):  # progress is a view: it never fails the job
            return
        elapsed = time.perf_counter() - self.bar.t0
        self.bar.update(rows - self.bar.n, rejected=rejected, tokens=f"{tokens / elapsed:,.0f}/s")

    def __enter__(self):
        if self.counter is not None:
            self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.counter is None:
            return
        self.stop.set()
        self.thread.join()
        if exc[0] is None:
            self._refresh()
        self.bar.close(quiet_too=False)  # the run says its own summary next


def build_dataset(cfg: AnnotateConfig, plan: Plan, in_fs, counter=None):
    """read (CPU tasks) -> [parse -> tokenize -> predict -> decode] with predict in an actor pool: fused into the
    actors on CPU, around them as CPU tasks when the actors hold GPUs (config.AnnotateConfig.fused)."""
    import ray

    from nlpbatch.annotate import stages
    from nlpbatch.annotate.predictors import Annotator, Predictor
    from nlpbatch.annotate.reader import CsvRows, JsonlLines, ParquetRowGroups

    resources = ray.cluster_resources()
    actors = max(cfg.min_actors or 1, cfg.actors(resources.get("CPU", 1), resources.get("GPU", 0)))
    batch_rows = cfg.rows_per_batch(plan.rows_in, actors)
    columns = list(dict.fromkeys([*plan.required, *cfg.kept]))
    if plan.fmt == "parquet":
        source = ParquetRowGroups(plan.files, columns=columns, filesystem=in_fs, include_paths=True)
    elif plan.fmt == "csv":
        source = CsvRows(plan.files, columns, cfg.csv_max_value_lines, filesystem=in_fs, include_paths=True)
    else:
        source = JsonlLines(plan.files, filesystem=in_fs, include_paths=True)
    ds = ray.data.read_datasource(source)
    parse = parse_options(cfg, plan.fmt, plan.question_column, plan.questions)
    engine = {
        "model_path": plan.model_path,
        "batch_tokens": cfg.tokens_per_batch,
        "backend": cfg.backend,
        "threads": max(1, int(cfg.cpus_per_actor)),  # one engine thread per CPU the actor holds
        "packing": cfg.packing,
    }
    pool = {
        # a fixed pool unless --min-actors asks for an autoscaling one
        "compute": ray.data.ActorPoolStrategy(
            min_size=cfg.min_actors or actors,
            max_size=actors,
            # a GPU actor gets its next batch while it works on this one, so it never waits for the tokenize tasks
            max_tasks_in_flight_per_actor=4 if cfg.num_gpus > 0 else None,
        ),
        "batch_size": batch_rows,
        "batch_format": "pyarrow",
        "num_gpus": cfg.num_gpus,
        "num_cpus": cfg.cpus_per_actor,
    }
    if cfg.fused:
        # raw rows split into small blocks (a streaming repartition, cheap): every actor of the pool gets work
        ds = ds.repartition(target_num_rows_per_block=batch_rows)
        args = {
            **annotator_args(cfg, plan.model_path, plan.model_config, parse, engine["threads"]),
            "counter": counter,
        }
        return ds.map_batches(Annotator, fn_constructor_kwargs=args, **pool)
    tokenize = {"max_length": cfg.window, "stride": cfg.stride, "words": cfg.words}
    task = get_task(cfg.task)
    decode = decode_settings(cfg, plan.model_path, plan.model_config)
    ds = ds.map_batches(stages.parse_rows, batch_format="pyarrow", fn_kwargs=parse)
    ds = ds.map_batches(
        stages.tokenize,
        batch_format="pyarrow",
        batch_size=256,
        fn_kwargs={"task": cfg.task, "model_path": plan.model_path, **tokenize},
    )
    # Streaming split into small blocks: every actor of the pool gets work (a small file is one block), and
    # tokenization stays in CPU tasks instead of being fused into the inference actors.
    ds = ds.repartition(target_num_rows_per_block=batch_rows)
    args = {"task": cfg.task, **engine, "use_gpu": cfg.num_gpus > 0}
    ds = ds.map_batches(Predictor, fn_constructor_kwargs=args, **pool)
    if counter is None:
        return ds.map_batches(task.decode, batch_format="pyarrow", fn_kwargs=decode)
    options = {"decode": task.decode, "counter": counter, **decode}
    return ds.map_batches(decode_and_count, batch_format="pyarrow", fn_kwargs=options)
