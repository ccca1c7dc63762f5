"""Models in production: a registry on plain storage, promotion behind a gate on gold data, nightly runs that follow
the current version (and a rollback), on a local folder and the S3 server on 127.0.0.1."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nlpbatch.annotate.local_runner import annotate_texts
from nlpbatch.config import load_annotate_config
from nlpbatch.nightly import run_nightly
from nlpbatch.registry import POINTER, PromotionConflict, Registry, promote

pytestmark = pytest.mark.integration

DATES = ["2026-11-01", "2026-11-02", "2026-11-03"]


@pytest.fixture(scope="module")
def models(trained_ner_model, tmp_path_factory, data_dir):
    """A better and a worse candidate for the gate: the bundled MiniLM fine-tuned for 30 steps (conftest), and the
    same base model with a fresh, untrained head."""
    from transformers import AutoTokenizer, set_seed

    from nlpbatch.data.conll import load_conll
    from nlpbatch.models import resolve_model
    from nlpbatch.tasks.ner import build_model

    set_seed(0)
    untrained = tmp_path_factory.mktemp("candidates") / "untrained"
    build_model(resolve_model(None), load_conll(data_dir / "conll2003" / "validation.txt", 1)).save_pretrained(
        untrained
    )
    AutoTokenizer.from_pretrained(resolve_model(None)).save_pretrained(untrained)
    return {"trained": trained_ner_model, "untrained": untrained}


def _cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nlpbatch", *argv], capture_output=True, text=True)


def _partitions(root: Path) -> None:
    for day in DATES:
        folder = root / f"dt={day}"
        folder.mkdir(parents=True)
        rows = [{"id": f"{day}-{i}", "text": f"Angela Merkel visited Paris, note {i}."} for i in range(3)]
        pq.write_table(pa.Table.from_pylist(rows), folder / "part-0.parquet")


def _versions_in(output: Path, day: str) -> tuple[list[str], list[str]]:
    """(ids, model_version of each row) of what the partition's manifest publishes."""
    manifest = json.loads((output / f"dt={day}" / "_SUCCESS.json").read_text())
    files = [output / f"dt={day}" / rel for rel in manifest["output_files"] if rel.startswith("data/")]
    table = pa.concat_tables([pq.read_table(f) for f in files])
    assert manifest["provenance"]["model_version"] in table["model_version"].to_pylist()
    return sorted(table["id"].to_pylist()), table["model_version"].to_pylist()


def test_promote_gates_on_gold_and_nightly_follows_the_model(models, data_dir, tmp_path, monkeypatch):
    registry, corpus, output = tmp_path / "registry", tmp_path / "corpus", tmp_path / "annotations"
    _partitions(corpus)
    gold = str(data_dir / "conll2003" / "validation.txt")
    gate = ["--gold", gold, "--max-examples", "100"]

    first = _cli("promote", "--registry", str(registry), "--model", str(models["untrained"]))
    assert first.returncode == 0, first.stderr
    assert "v0001 is current (was none)" in first.stderr  # the first promotion needs no gate
    base = load_annotate_config(
        task="ner", model=str(registry), input=str(corpus), output=str(output), runner="local", retention_hours=0
    )
    night = run_nightly(base)
    assert night["model_version"] == "v0001" and list(night["annotated"]) == DATES

    # a better model passes the gate, both scores printed side by side
    better = _cli("promote", "--registry", str(registry), "--model", str(models["trained"]), *gate)
    assert better.returncode == 0, better.stderr
    result = json.loads(better.stdout)
    scores = result["gate"][gold]
    assert result["promoted"] and result["version"] == 2 and scores["candidate"] > scores["current"] + 0.2
    assert (
        "overall_f1" in better.stderr and "<- gate" in better.stderr and "v0002 is current (was v0001)" in better.stderr
    )

    # a worse one is refused: exit 1, both scores said, the pointer stays and no version is added
    pointer = (registry / POINTER).read_text()
    worse = _cli("promote", "--registry", str(registry), "--model", str(models["untrained"]), *gate)
    assert worse.returncode == 1 and "not promoted" in worse.stderr
    assert f"overall_f1 {scores['current']:.4f} vs {scores['candidate']:.4f}" in worse.stderr
    assert (registry / POINTER).read_text() == pointer and list(Registry(str(registry)).versions()) == [1, 2]

    # the next nightly redoes every partition the old version wrote, once each, newest first, and says so apart
    redo = run_nightly(base)
    assert redo["model_version"] == "v0002" and redo["annotated"] == {}
    assert list(redo["redone_for_model"]) == DATES[::-1]
    for day in DATES:
        ids, versions = _versions_in(output, day)
        assert ids == [f"{day}-{i}" for i in range(3)] and set(versions) == {"v0002"}
    again = run_nightly(base)
    assert again["redone_for_model"] == {} and again["annotated"] == {} and again["skipped"] == DATES

    # a promotion while a nightly run is under way reaches the next run, never half of this one
    import nlpbatch.annotate.pipeline as pipeline

    real = pipeline.run_annotation
    calls = []

    def annotate_then_promote(cfg, *partition):
        manifest = real(cfg, *partition)
        if not calls:
            rollback = promote(str(registry), version=1, force=True)
            assert rollback["promoted"] and rollback["version"] == 1
        calls.append(cfg.output)
        return manifest

    monkeypatch.setattr(pipeline, "run_annotation", annotate_then_promote)
    (corpus / "dt=2026-11-04").mkdir()
    rows = [{"id": f"2026-11-04-{i}", "text": "Emmanuel Macron in Berlin."} for i in range(2)]
    pq.write_table(pa.Table.from_pylist(rows), corpus / "dt=2026-11-04" / "part-0.parquet")
    (corpus / "dt=2026-11-05").mkdir()
    pq.write_table(pa.Table.from_pylist(rows[:1]), corpus / "dt=2026-11-05" / "part-0.parquet")
    during = run_nightly(base)
    assert during["model_version"] == "v0002" and list(during["annotated"]) == ["2026-11-04", "2026-11-05"]
    assert {tuple(set(_versions_in(output, d)[1])) for d in ("2026-11-04", "2026-11-05")} == {("v0002",)}
    monkeypatch.setattr(pipeline, "run_annotation", real)

    # the rollback: `--model-change keep` leaves the partitions as they are, the default redoes all five
    kept = run_nightly(base, model_change="keep")
    assert kept["model_version"] == "v0001" and kept["redone_for_model"] == {} and len(kept["skipped"]) == 5
    back = run_nightly(base)
    assert list(back["redone_for_model"]) == ["2026-11-05", "2026-11-04", *DATES[::-1]]
    assert all(set(_versions_in(output, d)[1]) == {"v0001"} for d in back["redone_for_model"])
    history = json.loads((registry / POINTER).read_text())["history"]
    assert [h["version"] for h in history] == [1, 2, 1] and history[0]["forced"] is True


@pytest.mark.parametrize("where", ["local", "s3"])
def test_two_promotions_one_wins_and_the_other_is_told(tiny_ner_model, tmp_path, where, request):
    """Both read the pointer at v0001 and gate against it; the first to write moves it, the second is refused
    (PromotionConflict, nothing changed by it) although its version was registered; numbers are never shared."""
    if where == "s3":
        s3_server = request.getfixturevalue("s3_server")
        _, bucket = request.getfixturevalue("s3_bucket")
        uri, endpoint = f"s3://{bucket}/registry", s3_server
    else:
        uri, endpoint = str(tmp_path / "registry"), None
    promote(uri, model=str(tiny_ner_model), s3_endpoint=endpoint)
    a, b = Registry(uri, endpoint), Registry(uri, endpoint)
    seen_by_a, seen_by_b = a.pointer(), b.pointer()
    number_a, number_b = a.register(str(tiny_ner_model)), b.register(str(tiny_ner_model))
    assert (number_a, number_b) == (2, 3)
    a.point_to(number_a, seen_by_a, {"forced": True})
    with pytest.raises(
        PromotionConflict, match="another promotion moved the pointer to v0002 while this one was gated"
    ):
        b.point_to(number_b, seen_by_b, {"forced": True})
    assert Registry(uri, endpoint).current() == 2 and list(Registry(uri, endpoint).versions()) == [1, 2, 3]
    if where == "s3":  # an S3 registry resolves to a local copy of the version, which annotate runs
        os.environ["XDG_CACHE_HOME"] = str(tmp_path / "cache")
        try:
            cfg = load_annotate_config(task="ner", model=uri, input="-", output="-", s3_endpoint=endpoint)
            rows = annotate_texts(cfg, ["Angela Merkel visited Paris."])
            assert len(rows) == 1 and (tmp_path / "cache" / "nlpbatch" / "registry").is_dir()
        finally:
            del os.environ["XDG_CACHE_HOME"]


KILLED_COPY = r"""
import sys, time
import pyarrow.fs as fs
real = fs.copy_files
calls = []
def slow(*args, **kwargs):
    calls.append(1)
    if len(calls) == 2:
        print("copying", flush=True)
        time.sleep(60)
    return real(*args, **kwargs)
fs.copy_files = slow
from nlpbatch.cli import main
sys.exit(main(["promote", "--registry", sys.argv[1], "--model", sys.argv[2], "--force"]))
"""


def test_a_killed_promotion_never_names_a_half_copied_version(tiny_ner_model, tmp_path):
    registry = tmp_path / "registry"
    promote(str(registry), model=str(tiny_ner_model))
    pointer = (registry / POINTER).read_text()
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_COPY, str(registry), str(tiny_ner_model)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "copying"
    os.kill(proc.pid, signal.SIGKILL)  # mid-copy: one file of the version is in place, its record is not
    proc.wait()
    half = registry / "versions" / "v0002"
    assert half.is_dir() and not (half / "_REGISTERED.json").exists()
    assert (registry / POINTER).read_text() == pointer and list(Registry(str(registry)).versions()) == [1]
    listed = _cli("models", "list", str(registry))
    assert "v0001" in listed.stdout and "v0002" not in listed.stdout
    started = time.monotonic()
    done = promote(str(registry), model=str(tiny_ner_model), force=True)  # the killed number is not reused
    assert done["version"] == 3 and time.monotonic() - started < 60
    assert Registry(str(registry)).current() == 3


def test_an_mlflow_alias_resolves_to_the_version_it_names_now(tiny_ner_model, tmp_path, monkeypatch):
    """`--model models:/NAME@ALIAS` against a local MLflow store: the model files `train --mlflow-tracking-uri`
    logs, registered as two versions; the alias moves and the next resolution follows it; rows name the version."""
    mlflow = pytest.importorskip("mlflow")
    from nlpbatch.models import local_model_path, model_fingerprint, model_version
    from nlpbatch.tracking import log_run

    store = f"file://{tmp_path / 'mlruns'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    client = mlflow.MlflowClient(tracking_uri=store)
    client.create_registered_model("ner")
    for _ in range(2):  # the same files logged twice: two runs, two versions
        run_id = log_run(store, "ner", {"config": {"task": "ner"}, "run_name": "tiny"}, tiny_ner_model)
        client.create_model_version("ner", f"runs:/{run_id}/model", run_id=run_id)
    client.set_registered_model_alias("ner", "champion", "1")
    first = local_model_path("models:/ner@champion")
    assert model_version(first, model_fingerprint(first)) == "mlflow:ner/1"
    rows = annotate_texts(
        load_annotate_config(task="ner", model="models:/ner@champion", input="-", output="-"), ["Paris."]
    )
    assert len(rows) == 1 and rows[0]["entities"] is not None
    client.set_registered_model_alias("ner", "champion", "2")
    moved = local_model_path("models:/ner@champion")
    assert moved != first and model_version(moved, model_fingerprint(moved)) == "mlflow:ner/2"
    with pytest.raises(FileNotFoundError, match="not in the MLflow registry"):
        local_model_path("models:/ner@nobody")
