"""SIGTERM handling: a child process forked after our handler was installed (OpenVINO's telemetry, a
multiprocessing worker) ends as SIGTERM ends a process, without a traceback; signals held over a step wait for it,
a second one does not."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

CHILD = textwrap.dedent(
    """
    import multiprocessing, os, signal, time
    from nlpbatch.errors import handle_sigterm

    handle_sigterm()
    child = multiprocessing.get_context("fork").Process(target=time.sleep, args=(30,))
    child.start()
    time.sleep(0.5)
    os.kill(child.pid, signal.SIGTERM)
    child.join()
    print(child.exitcode)
    """
)


def test_a_forked_child_ends_on_sigterm_without_a_traceback():
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == str(-signal.SIGTERM) and "Traceback" not in done.stderr, done.stderr


def test_held_signals_wait_for_the_step_and_a_second_one_does_not():
    from nlpbatch.errors import Stopped, handle_sigterm, signals_held

    previous = signal.getsignal(signal.SIGTERM)
    handle_sigterm()
    try:
        finished = []
        with pytest.raises(Stopped):
            with signals_held("the step"):
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.1)
                finished.append(True)  # the step ran to its end
        assert finished == [True]
        with pytest.raises(Stopped):
            with signals_held("the step"):
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.1)
                os.kill(os.getpid(), signal.SIGTERM)  # asked twice: at once
                time.sleep(0.1)
                finished.append(False)
        assert finished == [True]
        from nlpbatch.errors import on_sigterm

        assert signal.getsignal(signal.SIGTERM) is on_sigterm  # our handler is back after the step
    finally:
        signal.signal(signal.SIGTERM, previous)
