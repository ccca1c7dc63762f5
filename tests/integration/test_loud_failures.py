"""Runs that went wrong say so: a run whose rows are mostly rejected fails after publishing the rejects (with their
reasons, which `show` prints), an input without rows fails unless empty is fine, and `nightly` over a folder with no
partitions fails. Each exits non-zero with one `nlpbatch: error:` line."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from nlpbatch.annotate.commit import MANIFEST
from nlpbatch.annotate.pipeline import run_annotation
from nlpbatch.config import load_annotate_config
from nlpbatch.errors import RunFailed

pytestmark = pytest.mark.integration


def _nlpbatch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nlpbatch", *args], capture_output=True, text=True, timeout=300)


def test_a_run_of_rejects_fails_after_publishing_them(ray_cluster, tiny_ner_model, tmp_path):
    corpus = tmp_path / "in.jsonl"
    rows = [{"id": "a", "text": None}, {"id": "b", "text": ""}, {"id": "c", "text": None}, {"id": "d", "text": "Ok"}]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = dict(task="ner", model=str(tiny_ner_model), input=str(corpus), max_length=32, stride=8)
    out = tmp_path / "out"
    with pytest.raises(RunFailed, match=r"3 of 4 rows rejected \(75%, over --max-reject-rate 0.5\)") as failed:
        run_annotation(load_annotate_config(output=str(out), **common))
    assert "text is null: 2" in str(failed.value) and "text is empty: 1" in str(failed.value)
    manifest = json.loads((out / MANIFEST).read_text())  # published: the rejects are there to read
    assert manifest["rows_rejected"] == 3 and manifest["reject_reasons"] == {"text is null": 2, "text is empty": 1}
    assert manifest["status"] == "failed" and manifest["failure"] == str(failed.value)  # the next night redoes it
    shown = _nlpbatch("show", str(out))
    assert shown.returncode == 0, shown.stderr
    assert "3 rejected" in shown.stdout and "text is null: 2" in shown.stdout

    # the same rows under a limit they keep (the check the run makes before publishing): no failure
    from nlpbatch.annotate.pipeline import reject_rate_failure

    assert (
        reject_rate_failure(4, manifest, load_annotate_config(output=str(out), max_reject_rate=0.8, **common)) is None
    )


def test_no_rows_and_no_partitions_fail_unless_empty_is_fine(tiny_ner_model, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    proc = _nlpbatch("annotate", "ner", "--model", str(tiny_ner_model), "--input", str(empty), "--output", "o")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert f"nlpbatch: error: {empty}: no rows to annotate" in proc.stderr and "--allow-empty" in proc.stderr

    folder = tmp_path / "daily"
    folder.mkdir()
    proc = _nlpbatch("nightly", "ner", "--model", str(tiny_ner_model), "--input", str(folder), "--output", "o")
    assert proc.returncode != 0 and "no dt=YYYY-MM-DD partitions" in proc.stderr
    proc = _nlpbatch(
        "nightly", "ner", "--model", str(tiny_ner_model), "--input", str(folder), "--output", "o", "--allow-empty"
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["dates"] == []


def test_unreachable_hosts_and_models_fail_in_seconds_with_one_line(tmp_path):
    import os
    import time

    corpus = tmp_path / "in.jsonl"
    corpus.write_text(json.dumps({"id": "a", "text": "Paris"}) + "\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cases = [
        (
            ["--model", "no-such-org/no-such-model", "--input", str(corpus), "--output", str(tmp_path / "o")],
            "--model no-such-org/no-such-model: not available from the Hugging Face hub (HF_HUB_OFFLINE is set",
        ),
        (
            [
                "--model",
                "some/model",
                "--input",
                "s3://bucket/in.jsonl",
                "--output",
                str(tmp_path / "o"),
                "--s3-endpoint",
                "http://nowhere.invalid:9",
            ],
            "s3://bucket/in.jsonl: cannot reach S3: the host nowhere.invalid does not resolve",
        ),
    ]
    for args, message in cases:
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "nlpbatch", "annotate", "ner", *args], capture_output=True, text=True, env=env
        )
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert message in proc.stderr and proc.stderr.count("\n") <= 2
        assert time.perf_counter() - t0 < 30  # about 5 s here: imports, then the failure


def test_sigterm_stops_annotate_with_one_line_and_nothing_half_published(tiny_ner_model, tmp_path):
    """A real SIGTERM (a scheduler's, a `kill`) to a running `nlpbatch annotate` on a Ray cluster of its own: one
    line, exit 143, no stack dump, the lease released and nothing published."""
    import os
    import signal
    import time

    corpus = tmp_path / "in.jsonl"
    corpus.write_text(
        "".join(json.dumps({"id": f"d{i}", "text": "Angela Merkel visited Paris. " * 20}) + "\n" for i in range(5_000))
    )
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nlpbatch",
            "annotate",
            "ner",
            "--model",
            str(tiny_ner_model),
            "--input",
            str(corpus),
            "--output",
            str(out),
            "--max-actors",
            "1",
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "RAY_AUTH_MODE": "disabled"},
    )
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None and not (out / "_LEASE.json").exists():
        time.sleep(0.2)
    time.sleep(2)  # the lease is held: the cluster is starting (or the stream has begun)
    assert proc.poll() is None, proc.stderr.read()[-2000:]
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-3000:]
    assert re.search(r"nlpbatch: stopped by SIGTERM: nothing of run \S+ was published; \S+ is as it was", stderr)
    assert "Traceback" not in stderr and "PC: @" not in stderr
    assert not (out / "_LEASE.json").exists() and not (out / "_SUCCESS.json").exists()
