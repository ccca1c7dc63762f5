"""Publishing when the crash is not a vanished process: an exception (Ctrl-C, SIGTERM, SystemExit, a full disk, a
read-only or forbidden folder) at every step of publish, real signals at the worst moments (locally and on the S3
server with the manifest's reply held back), a manifest that cannot be followed, a stuck lock, a real full and a
real read-only disk. After each: the manifest names only existing files of one attempt, nothing foreign or outside
the output changed, and the next run leaves a clean output."""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from pyarrow import fs

from nlpbatch.annotate import commit as commit_mod
from nlpbatch.annotate.commit import (
    ATTEMPTS,
    LEASE,
    MANIFEST,
    STAGING,
    TOMBSTONES,
    Commit,
    LockTimeout,
    ManifestError,
    Store,
    acquire_lease,
)
from nlpbatch.annotate.pipeline import run_annotation
from nlpbatch.config import load_annotate_config
from nlpbatch.errors import Stopped, handle_sigterm
from nlpbatch.storage import StorageError

from .faulty_fs import FAULTS, FaultyLocal, step_os_calls
from .test_publish import Output

pytestmark = pytest.mark.integration


@pytest.fixture()
def faulty_os(monkeypatch):
    return step_os_calls(monkeypatch)


def _faulty_output(tmp_path: Path, use: list | None = None) -> Output:
    out = Output("local", tmp_path, None, None)
    out.fs = FaultyLocal()
    if use is not None:
        use[:] = [out.fs]
    out.store = Store(out.fs, out.path)
    out.write("data/notes.csv", b"foreign")
    (tmp_path / "outside.txt").write_text("outside")
    return out


def _publish_as_the_pipeline_does(out: Output, run_id: str, at: int | None, fault: BaseException | None) -> Commit:
    """One attempt, faulted at step `at` of publish, abort and release, handled as run_annotation handles it."""
    attempt = out.start(run_id, break_lease=True)
    staged = out.stage(attempt)
    out.fs.arm(at, fault)
    try:
        try:
            attempt.publish(staged, {"task": "ner", "rows_out": 2})
        except BaseException:
            attempt.abort()
            raise
        finally:
            try:
                attempt.lease.release()
            except Exception:
                pass  # said, never raised over the outcome
    except (KeyboardInterrupt, SystemExit, OSError):
        pass
    finally:
        out.fs.disarm()
    return attempt


def _clean_after_a_rerun(out: Output, tmp_path: Path) -> None:
    """The next run (it breaks a lease the faulted one could not release) publishes and leaves only its own."""
    rerun = out.start("next", break_lease=True)
    manifest = rerun.publish(out.stage(rerun), {"task": "ner"})
    rerun.lease.release()
    assert out.check()["attempt"] == manifest["attempt"]
    listed = {i.path[len(out.path) + 1 :] for i in out.fs.get_file_info(fs.FileSelector(out.path, recursive=True))}
    files = {p for p in listed if out.fs.get_file_info(f"{out.path}/{p}").type.name == "File"}
    assert files == {*manifest["output_files"], MANIFEST, "data/notes.csv", f"{ATTEMPTS}/{rerun.name}.json"}, files
    assert LEASE not in listed  # (the equality above: no file left in _staging/ or _tombstones/ either)
    assert out.read("data/notes.csv") == b"foreign" and (tmp_path / "outside.txt").read_text() == "outside"


@pytest.mark.parametrize("kind", list(FAULTS))
def test_an_exception_at_every_step_of_publish(tmp_path, kind, faulty_os):
    """The protocol model's missing fault kinds: an exception raised, not a process gone, before and after each
    filesystem call of prepare, the manifest's swap, the bookkeeping, cleanup, abort and release."""
    probe = _faulty_output(tmp_path / "probe", faulty_os)
    _publish_as_the_pipeline_does(probe, "first", None, None)
    _publish_as_the_pipeline_does(probe, "second", None, None)
    steps = probe.fs.calls
    assert steps >= 20, steps
    outcomes = {"published": 0, "not published": 0}
    for at in range(steps):
        out = _faulty_output(tmp_path / f"{kind}-{at}", faulty_os)
        first = _publish_as_the_pipeline_does(out, "first", None, None)
        attempt = _publish_as_the_pipeline_does(out, "second", at, FAULTS[kind]())
        assert out.fs.fired, f"step {at} of {steps} was never reached"
        manifest = out.check()  # the manifest names only existing files, of one attempt
        assert not attempt.uncertain, "locally the store always says whether the manifest was written"
        if attempt.published:
            assert manifest["attempt"] == attempt.lease.attempt
        else:
            assert manifest["attempt"] == first.lease.attempt
        outcomes["published" if attempt.published else "not published"] += 1
        _clean_after_a_rerun(out, tmp_path / f"{kind}-{at}")
    assert outcomes["published"] >= 3 and outcomes["not published"] >= 10, outcomes


def test_sigterm_right_after_the_manifest_lands_publishes_it_whole(tmp_path, monkeypatch):
    """A real SIGTERM delivered after the compare-and-swap wrote the manifest and before the run learnt of it: the
    run stops (Stopped), says it published, and its files stay; the lease is released."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are delivered to the main thread")
    out = Output("local", tmp_path, None, None)
    previous = signal.getsignal(signal.SIGTERM)
    handle_sigterm()
    real_put_if = Store.put_if

    def put_then_signal(self, name, body, version):
        written = real_put_if(self, name, body, version)
        if name == MANIFEST:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)  # the handler runs here, in the middle of publish
        return written

    try:
        first = out.start("first")
        first.publish(out.stage(first), {"task": "ner"})
        first.lease.release()
        monkeypatch.setattr(Store, "put_if", put_then_signal)
        attempt = out.start("second")
        with pytest.raises(Stopped):
            try:
                attempt.publish(out.stage(attempt), {"task": "ner"})
            except BaseException:
                attempt.abort()
                raise
        assert attempt.published and "published version 2" in attempt.outcome()
        assert out.check()["attempt"] == attempt.lease.attempt  # every file it names is there

        # SIGTERM in the middle of releasing the lease: it is released all the same, then the run stops
        monkeypatch.setattr(Store, "put_if", real_put_if)
        real_get = Store.get

        def get_then_signal(self, name):
            if name == LEASE:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.2)
            return real_get(self, name)

        monkeypatch.setattr(Store, "get", get_then_signal)
        with pytest.raises(Stopped):
            attempt.lease.release()
        monkeypatch.setattr(Store, "get", real_get)
        assert out.store.get(LEASE).version is None, "the lease was left behind"
    finally:
        signal.signal(signal.SIGTERM, previous)


def _corpus(path: Path, n: int = 6) -> Path:
    path.write_text(
        "".join(json.dumps({"id": f"d{i}", "text": f"Angela Merkel visited Paris {i}."}) + "\n" for i in range(n))
    )
    return path


def _cfg(model, corpus, output, **kw):
    kw = {"runner": "local", "max_length": 32, "stride": 8, **kw}
    return load_annotate_config(task="ner", model=str(model), input=str(corpus), output=str(output), **kw)


def test_sigterm_while_the_s3_manifest_reply_is_in_flight(tiny_ner_model, s3_server, s3_bucket, tmp_path):
    """The S3 server carried out the manifest's PUT, its reply is held back, SIGTERM arrives: the CLI waits for the
    write, says what it published and exits 143; the manifest names only files that exist."""
    from .faulty_proxy import FaultyProxy

    client, bucket = s3_bucket
    corpus = _corpus(tmp_path / "in.jsonl")
    output = f"s3://{bucket}/out"
    first = run_annotation(_cfg(tiny_ner_model, corpus, output, s3_endpoint=s3_server))
    proxy = FaultyProxy(
        s3_server,
        slow_down=0,
        drop=0,
        only=lambda head: head.startswith(b"PUT") and b"_SUCCESS.json" in head,
        script=["delay_reply"],
        reply_delay=3.0,
    )
    try:
        flags = ["--model", str(tiny_ner_model), "--input", str(corpus), "--output", output, "--runner", "local"]
        flags += ["--s3-endpoint", proxy.endpoint, "--max-length", "32", "--stride", "8"]
        proc = subprocess.Popen(
            [sys.executable, "-m", "nlpbatch", "annotate", "ner", *flags], stderr=subprocess.PIPE, text=True
        )
        assert proxy.delayed.wait(180), "the run never wrote its manifest"
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proxy.close()
    assert proc.returncode == 143, stderr[-3000:]
    assert "Traceback" not in stderr and "published version 2" in stderr, stderr[-3000:]
    manifest = json.loads(client.get_object(Bucket=bucket, Key="out/_SUCCESS.json")["Body"].read())
    assert manifest["version"] == 2 and manifest["run_id"] != first["run_id"]
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="out/")["Contents"]}
    assert {f"out/{f}" for f in manifest["output_files"]} <= keys, "the manifest names files that are gone"
    assert "out/_LEASE.json" not in keys
    assert {f"out/{f}" for f in first["output_files"]} <= keys  # the replaced files stay for their readers


def test_replaced_files_stay_for_readers_of_the_previous_version(tmp_path):
    out = Output("local", tmp_path, None, None)
    first = out.start("first", retention=3600)
    first_files = first.publish(out.stage(first), {"task": "ner"})["output_files"]
    first.lease.release()
    second = out.start("second", retention=3600)
    manifest = second.publish(out.stage(second), {"task": "ner"})
    second.lease.release()
    assert manifest["replaced_files_kept_for_readers"] == 3 and manifest["foreign_file_count"] == 0
    assert all(out.exists(f) for f in first_files)  # a query still reading version 1 finishes its read
    (tombstone,) = os.listdir(tmp_path / "out" / TOMBSTONES)
    old = time.time() - 3601  # an hour later (the store's clock: the tombstone's last write)
    os.utime(tmp_path / "out" / TOMBSTONES / tombstone, (old, old))
    third = out.start("third", retention=3600)
    third.publish(out.stage(third), {"task": "ner"})
    third.lease.release()
    assert not any(out.exists(f) for f in first_files)  # past the retention: gone
    assert all(out.exists(f) for f in manifest["output_files"])  # version 2's files: kept for their hour
    assert out.check()["run_id"] == "third"


def test_a_deleted_manifest_leaves_no_old_run_behind(tmp_path):
    out = Output("local", tmp_path, None, None)
    for run_id in ("a", "b"):
        attempt = out.start(run_id)
        attempt.publish(out.stage(attempt), {"task": "ner"})
        attempt.lease.release()
    os.remove(tmp_path / "out" / MANIFEST)  # by hand: the output starts afresh
    attempt = out.start("c")
    manifest = attempt.publish(out.stage(attempt), {"task": "ner"})
    attempt.lease.release()
    left = sorted(os.listdir(tmp_path / "out" / "data")) + sorted(os.listdir(tmp_path / "out" / "rejects"))
    assert manifest["foreign_file_count"] == 0 and len(left) == len(manifest["output_files"]), left


@pytest.mark.parametrize("bad", [None, "v2", True, -1])
def test_a_manifest_that_cannot_be_followed_is_one_error(tiny_ner_model, tmp_path, bad):
    corpus = _corpus(tmp_path / "in.jsonl")
    out = tmp_path / "out"
    run_annotation(_cfg(tiny_ner_model, corpus, out))
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["version"] = bad
    (out / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match=r"_SUCCESS.json cannot be followed: its version is .*--overwrite"):
        run_annotation(_cfg(tiny_ner_model, corpus, out))
    from nlpbatch.show import read_rows

    with pytest.raises(ManifestError):
        read_rows(str(out), 3)
    published = run_annotation(_cfg(tiny_ner_model, corpus, out, overwrite=True))
    # published over it; the old run's files went, as its attempt record proves them its own
    assert published["version"] == 1 and not any((out / f).exists() for f in manifest["output_files"])
    if bad == "v2":  # and through the CLI: one line, exit 2
        proc = subprocess.run(
            [sys.executable, "-m", "nlpbatch", "show", str(out)], capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, proc.stderr
        (out / MANIFEST).write_text(json.dumps({**published, "output_files": "data/x"}))
        proc = subprocess.run(
            [sys.executable, "-m", "nlpbatch", "show", str(out)], capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "output_files" in proc.stderr


def test_a_stuck_lock_holder_times_out_naming_the_lease(tmp_path, monkeypatch):
    out = Output("local", tmp_path, None, None)
    holder = out.start("stuck")  # its process then stops inside the lock (SIGSTOP): the lock stays held
    fd = os.open(out.path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    monkeypatch.setattr(commit_mod, "LOCK_TIMEOUT", 1.5)
    try:
        t0 = time.monotonic()
        with pytest.raises(LockTimeout, match=r"held for 2 s by run stuck \(pid \d+ on .*stopped or hung"):
            acquire_lease(out.store, out.uri, "waiting", 60, False, heartbeat=False)
        assert time.monotonic() - t0 < 10
    finally:
        os.close(fd)
    holder.lease.release()


def test_a_csv_with_an_unclosed_quote_is_a_reject_not_a_fold(tiny_ner_model, tmp_path):
    lines = ["id,text"] + [f"r{i},Angela Merkel visited Paris {i}" for i in range(1000)]
    lines[4] = 'r3,"a legit value\nover two lines"'  # a quoted line break: the rows after it keep their lines
    lines[13] = 'r12,"this quote never closes'
    (tmp_path / "in.csv").write_text("\n".join(lines) + "\n")
    manifest = run_annotation(_cfg(tiny_ner_model, tmp_path / "in.csv", tmp_path / "out", output_format="jsonl"))
    assert (manifest["rows_in"], manifest["rows_rejected"]) == (13, 1)
    (reason,) = manifest["reject_reasons"]
    assert reason.startswith("a quoted value spans 989 lines from line 15 (over --csv-max-value-lines 100)")
    rows = [json.loads(x) for f in (tmp_path / "out" / "data").iterdir() for x in f.read_text().splitlines()]
    assert {r["id"]: r["line"] for r in rows}["r11"] == 14  # line numbers count the quoted line break


def test_invalid_utf8_in_a_nested_column_is_one_reject(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from nlpbatch.annotate.reader import parquet_blocks

    notes = pa.array([b"fine", b"caf\xe9", b"also fine"], pa.binary()).view(pa.string())
    meta = pa.StructArray.from_arrays([notes], ["note"])
    pq.write_table(pa.table({"id": ["a", "b", "c"], "text": ["x", "y", "z"], "meta": meta}), tmp_path / "p.parquet")
    with open(tmp_path / "p.parquet", "rb") as fh:
        (block,) = parquet_blocks(fh, ["id", "text", "meta"])
    errors = block.column("_error").to_pylist()
    assert errors[0] is None and errors[2] is None and "'meta'" in errors[1] and "UTF-8" in errors[1]
    assert block.column("id").to_pylist() == ["a", "b", "c"]


def test_an_input_appended_to_during_the_run_is_named(tiny_ner_model, tmp_path, monkeypatch):
    from nlpbatch.annotate import pipeline

    corpus = _corpus(tmp_path / "in.jsonl")
    real_plan = pipeline.plan_annotation

    def plan_then_append(cfg):
        plan = real_plan(cfg)
        with open(corpus, "a") as fh:  # its writer is still at work
            fh.write(json.dumps({"id": "late", "text": "Late row."}) + "\n")
        return plan

    monkeypatch.setattr(pipeline, "plan_annotation", plan_then_append)
    with pytest.raises(StorageError, match=rf"rows do not reconcile: 6 in.*{corpus} \(\d+ bytes when listed, \d+"):
        run_annotation(_cfg(tiny_ner_model, corpus, tmp_path / "out"))
    assert not (tmp_path / "out" / MANIFEST).exists() and not (tmp_path / "out" / LEASE).exists()


def test_a_failed_partition_is_redone_and_an_overlapping_run_is_in_progress(tiny_ner_model, tmp_path):
    from nlpbatch.nightly import run_nightly

    for day in ("2026-01-01", "2026-01-02"):
        (tmp_path / "in" / f"dt={day}").mkdir(parents=True)
        rows = [{"id": "a", "text": "Paris."}, {"id": "b", "text": None}, {"id": "c", "text": None}]
        (tmp_path / "in" / f"dt={day}" / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    base = _cfg(tiny_ner_model, f"{tmp_path}/in", f"{tmp_path}/out")
    first = run_nightly(base)
    assert sorted(first["failed"]) == ["2026-01-01", "2026-01-02"]  # 2 of 3 rejected, over 0.5: published, failed
    assert json.loads((tmp_path / "out" / "dt=2026-01-01" / MANIFEST).read_text())["status"] == "failed"
    # another live run holds the second partition (an overlapping cron): in progress, not a failure
    other = Output("local", tmp_path / "out", None, None, name="dt=2026-01-02").start("other-cron", heartbeat=True)
    again = run_nightly(base)
    other.lease.release()
    assert sorted(again["failed"]) == ["2026-01-01"], again  # retried, not "already complete"
    assert list(again["in_progress"]) == ["2026-01-02"] and "other-cron" in again["in_progress"]["2026-01-02"]
    fixed = run_nightly(dataclasses.replace(base, max_reject_rate=1.0))
    assert sorted(fixed["annotated"]) == ["2026-01-01", "2026-01-02"] and not fixed["failed"]
    assert run_nightly(base)["skipped"] == ["2026-01-01", "2026-01-02"]


@pytest.fixture()
def small_disk(tmp_path):
    """A real 2 MiB file system (tmpfs; root only), unmounted after the test."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_is_one_error_and_leaves_the_output_clean(tiny_ner_model, tmp_path, small_disk):
    corpus = _corpus(tmp_path / "in.jsonl", 400)
    out = small_disk / "out"
    first = run_annotation(_cfg(tiny_ner_model, corpus, out, rows_per_file=50))
    filler = small_disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:  # fill the disk to the last block (unbuffered: nothing is left to flush at close)
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    with pytest.raises(StorageError, match=r"No space left on device \(the disk is full: free space and run again\)"):
        run_annotation(_cfg(tiny_ner_model, corpus, out, rows_per_file=50))
    filler.unlink()
    assert json.loads((out / MANIFEST).read_text())["run_id"] == first["run_id"]
    assert not (out / LEASE).exists() and not list(out.glob("*.tmp")) and not (out / STAGING).exists()
    cli = [sys.executable, "-m", "nlpbatch", "annotate", "ner", "--model", str(tiny_ner_model), "--input", str(corpus)]
    cli += ["--output", str(out), "--runner", "local", "--max-length", "32", "--stride", "8"]
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    proc = subprocess.run(cli, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "Read-only file system (the file system is read-only: write the output elsewhere)" in proc.stderr
    assert "nothing was changed" in proc.stderr


def test_a_disk_turned_read_only_mid_run_keeps_the_first_error(
    tiny_ner_model, tmp_path, small_disk, monkeypatch, capsys
):
    corpus = _corpus(tmp_path / "in.jsonl")
    out = small_disk / "out"
    run_annotation(_cfg(tiny_ner_model, corpus, out))
    real_prepare = Commit.prepare

    def read_only_then_prepare(self, staged):
        subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
        return real_prepare(self, staged)

    monkeypatch.setattr(Commit, "prepare", read_only_then_prepare)
    with pytest.raises(StorageError, match=r"Read-only file system.*nothing of run \S+ was published"):
        run_annotation(_cfg(tiny_ner_model, corpus, out, lease_ttl_seconds=30))
    said = capsys.readouterr().err
    assert "the lease could not be released" in said and "--break-lease" in said
