"""Errors the CLI prints as one `nlpbatch: error:` line (no traceback) and exits non-zero on."""

from __future__ import annotations

import contextlib
import signal
import threading


class RunFailed(Exception):
    """The run did its work and published it, but the result is not what was asked for (too many rejects)."""


class Stopped(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C, so the same cleanup runs (not a C++ stack dump)."""


_OWNER: list[int] = []  # the process that installed the handler


def on_sigterm(signum, frame) -> None:
    import os

    if _OWNER and os.getpid() != _OWNER[0]:
        # a child forked after the handler was installed (OpenVINO's telemetry process, a multiprocessing worker)
        # inherits it: it must end as SIGTERM ends a process, not print a Stopped traceback
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    raise Stopped()


def handle_sigterm() -> None:
    """SIGTERM raises Stopped in the main thread. Called again after `ray.init`, whose core worker installs its own
    fatal-signal handler (the `*** SIGTERM received ... PC: @` dump)."""
    import os

    if threading.current_thread() is threading.main_thread():
        _OWNER[:] = [os.getpid()]
        signal.signal(signal.SIGTERM, on_sigterm)


def _stop_for(signum: int) -> KeyboardInterrupt:
    return Stopped() if signum == signal.SIGTERM else KeyboardInterrupt()


@contextlib.contextmanager
def signals_held(what: str):
    """Hold SIGINT / SIGTERM over a step that must not be cut in two (a manifest's compare-and-swap and the
    bookkeeping that says what it published, a lease's release): the first signal is raised as soon as the step
    is over, a second one at once (the user insists; the step's callers still handle an exception anywhere).
    Outside the main thread signals are not delivered to us, so this does nothing there."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    from nlpbatch.progress import say

    caught: list[int] = []

    def hold(signum, frame) -> None:
        if caught:
            raise _stop_for(signum)
        caught.append(signum)
        say(f"{signal.Signals(signum).name} received: stopping as soon as {what} is done")

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, hold)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
    if caught:
        raise _stop_for(caught[0])
