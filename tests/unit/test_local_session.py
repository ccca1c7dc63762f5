"""Training in this process keeps its checkpoints as Ray Train would: --resume takes the newest complete one, never
one whose copy a stopped run left half-done."""

from __future__ import annotations

from nlpbatch.train.loop import LocalSession


def test_resume_never_takes_a_half_copied_checkpoint(tmp_path):
    (tmp_path / "checkpoint_000001").mkdir()
    (tmp_path / "checkpoint_000002.partial").mkdir()  # the run was stopped while copying epoch 2
    assert LocalSession(str(tmp_path), keep=1, use_gpu=False).latest() == str(tmp_path / "checkpoint_000001")
    assert LocalSession(str(tmp_path / "none"), keep=1, use_gpu=False).latest() is None


def test_reports_keep_the_newest_checkpoints(tmp_path):
    session = LocalSession(str(tmp_path / "run"), keep=2, use_gpu=False)
    (tmp_path / "run").mkdir()
    for epoch in (1, 2, 3):
        saved = tmp_path / f"epoch{epoch}"
        saved.mkdir()
        (saved / "weights").write_text(str(epoch))
        session.report({"epoch": epoch}, str(saved))
    kept = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert kept == ["checkpoint_000002", "checkpoint_000003"]
    assert (tmp_path / "run" / "checkpoint_000003" / "weights").read_text() == "3"
