"""Progress reporting: what a user sees in a log (lines with ETA), on a terminal (a bar) and with --quiet."""

import re

import pytest

from nlpbatch.progress import Progress, progress_mode, say


def test_lines_mode_reports_count_rate_and_eta(capsys):
    bar = Progress("train", 200, "steps", "lines", every_seconds=0)
    bar.update(50, loss=0.123456)
    bar.close()
    out, err = capsys.readouterr()
    assert out == ""  # stdout is the command's JSON result
    lines = err.splitlines()
    assert len(lines) == 2 and all(line.startswith("[nlpbatch] train: ") for line in lines)
    assert "50/200 steps (25%)" in lines[0] and "loss 0.1235" in lines[0]
    assert re.search(r"ETA \d+:\d\d", lines[0]) and "steps/s" in lines[0]
    assert "50/200 steps (25%)" in lines[1]  # close() repeats the last state once


def test_lines_mode_waits_for_the_interval(capsys):
    bar = Progress("annotate ner", 10, "rows", "lines", every_seconds=3600)
    for _ in range(10):
        bar.update(1)
    assert capsys.readouterr().err == ""  # nothing until the interval has passed ...
    bar.close()
    assert capsys.readouterr().err.count("\n") == 1  # ... and one line at the end


def test_quiet_mode_prints_only_the_summary(capsys):
    bar = Progress("evaluate", 5, "batches", "quiet", every_seconds=0)
    bar.update(5)
    assert capsys.readouterr().err == ""
    bar.close("evaluate: done")
    assert capsys.readouterr().err == "[nlpbatch] evaluate: done\n"


def test_bar_mode_draws_a_tqdm_bar(capsys):
    bar = Progress("annotate ner", 4, "rows", "bar")
    bar.update(4, rejected=1)
    bar.close()
    err = capsys.readouterr().err
    assert "4/4" in err and "rejected=1" in err  # tqdm's bar
    assert err.splitlines()[-1].startswith("[nlpbatch] annotate ner: 4/4 rows (100%)")  # then the summary line


def test_unknown_total_has_no_eta_and_modes_are_checked(capsys):
    bar = Progress("read", None, "rows", "lines", every_seconds=0)
    bar.update(7)
    assert "read: 7 rows" in capsys.readouterr().err and "ETA" not in bar.line()
    with pytest.raises(ValueError, match="progress mode"):
        Progress("x", 1, "rows", "loud")


def test_mode_follows_the_terminal(monkeypatch):
    assert progress_mode(quiet=True) == "quiet"
    monkeypatch.setattr("sys.stderr.isatty", lambda: False)
    assert progress_mode() == "lines"
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)
    assert progress_mode() == "bar"


def test_say_writes_one_prefixed_line_to_stderr(capsys):
    say("hello")
    assert capsys.readouterr() == ("", "[nlpbatch] hello\n")
