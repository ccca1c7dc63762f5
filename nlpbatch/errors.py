"""Errors the CLI prints as one `nlpbatch: error:` line (no traceback) and exits non-zero on."""


class RunFailed(Exception):
    """The run did its work and published it, but the result is not what was asked for (too many rejects)."""


class Stopped(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C, so the same cleanup runs (not a C++ stack dump)."""


def on_sigterm(signum, frame) -> None:
    raise Stopped()


def handle_sigterm() -> None:
    """SIGTERM raises Stopped in the main thread. Called again after `ray.init`, whose core worker installs its own
    fatal-signal handler (the `*** SIGTERM received ... PC: @` dump)."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_sigterm)
