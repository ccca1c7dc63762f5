"""Progress for long work, one reporter for every stage: a tqdm bar on a terminal, a line every `every_seconds`
(30, or $NLPBATCH_PROGRESS_SECONDS) otherwise (cron, CI, `ray job logs`), and with --quiet nothing but each stage's
summary line.

The mode is decided once, on the driver, and passed to Ray workers (their stdout is never a terminal): a Train
worker's lines reach the driver through Ray's log forwarding, each exactly once.
"""

from __future__ import annotations

import os
import sys
import time

MODES = ("bar", "lines", "quiet")


def progress_mode(quiet: bool = False) -> str:
    """ "quiet" when asked, "bar" when stderr is a terminal, else "lines"."""
    if quiet:
        return "quiet"
    return "bar" if sys.stderr.isatty() else "lines"


def say(message: str) -> None:
    """One `[nlpbatch]` line to stderr (stdout carries the command's JSON result), flushed. Writes to the stream,
    not through print(): Ray Train patches print() in its workers into a logger that echoed every line twice."""
    sys.stderr.write(f"[nlpbatch] {message}\n")
    sys.stderr.flush()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:d}:{rest % 60:02d}"


class Progress:
    """`update(n, **postfix)` as work is done; `close()` prints the summary line (also in quiet mode).

    `total` may be None (unknown): no percentage or ETA then. Rate and ETA are over the whole run so far.
    """

    def __init__(
        self,
        desc: str,
        total: int | None,
        unit: str,
        mode: str = "lines",
        every_seconds: float | None = None,
        start: int = 0,
    ):
        if mode not in MODES:
            raise ValueError(f"progress mode must be one of {MODES}, got {mode!r}")
        if every_seconds is None:  # a line every 30 s in logs; NLPBATCH_PROGRESS_SECONDS sets another interval
            every_seconds = float(os.environ.get("NLPBATCH_PROGRESS_SECONDS", "30"))
        self.desc, self.total, self.unit, self.mode = desc, total, unit, mode
        self.every, self.n, self.start = every_seconds, start, start
        self.postfix: dict[str, str] = {}
        self.t0 = self.last = time.perf_counter()
        self.bar = None
        if mode == "bar":
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=start, desc=desc, unit=f" {unit}", dynamic_ncols=True)

    def update(self, n: int = 1, **postfix) -> None:
        self.n += n
        self.set(**postfix)

    def set(self, **postfix) -> None:
        """Replace the postfix (e.g. loss=0.31) and report if it is time."""
        self.postfix.update({k: f"{v:.4g}" if isinstance(v, float) else str(v) for k, v in postfix.items()})
        if self.bar is not None:
            self.bar.n = self.n
            self.bar.set_postfix(self.postfix, refresh=True)
        elif self.mode == "lines" and time.perf_counter() - self.last >= self.every:
            self.last = time.perf_counter()
            say(self.line())

    def line(self) -> str:
        elapsed = time.perf_counter() - self.t0
        done = self.n - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.desc}: {self.n:,}" + (f"/{self.total:,} {self.unit}" if self.total else f" {self.unit}")]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f}%)"
        parts.append(f"{rate:,.1f} {self.unit}/s")
        parts += [f"{k} {v}" for k, v in self.postfix.items()]
        eta = (self.total - self.n) / rate if self.total and rate > 0 else None
        parts.append(f"elapsed {_duration(elapsed)}" + (f", ETA {_duration(eta)}" if eta is not None else ""))
        return ", ".join(parts)

    def close(self, summary: str | None = None, quiet_too: bool = True) -> None:
        """End the bar; print `summary` (or the final progress line) once, in every mode (with --quiet only when
        `quiet_too`: a stage whose caller prints its own summary next says nothing twice)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if quiet_too or self.mode != "quiet":
            say(summary if summary is not None else self.line())
