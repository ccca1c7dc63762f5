"""A local filesystem that raises one armed fault (Ctrl-C, SystemExit, a full disk, a read-only or forbidden
folder) before or after any of the calls the publish protocol makes: the model tests' asynchronous exceptions."""

from __future__ import annotations

import errno
import os
import threading

from pyarrow import fs


class FaultyLocal(fs.LocalFileSystem):
    """The local filesystem with one fault armed: at the `at`-th step (from 0) it is raised. Every call of a method
    publish uses is two steps, before it and after it (the call done, then the exception: an asynchronous one lands
    between any two statements); `os.replace` / `os.remove` count too (`step_os_calls`). Counts the steps either way, so
    a clean run tells how many there are to fault."""

    METHODS = ("move", "delete_file", "delete_dir", "create_dir", "open_output_stream", "get_file_info")
    METHODS += ("open_input_stream",)

    def __init__(self):
        super().__init__()
        self.calls, self.at, self.fault, self.fired = 0, None, None, False

    def arm(self, at: int | None, fault: BaseException | None) -> None:
        self.calls, self.at, self.fault, self.fired = 0, at, fault, False

    def disarm(self) -> None:
        self.fault = None

    def _tick(self) -> None:
        with _TICK:
            step, self.calls = self.calls, self.calls + 1
        if self.fault is not None and step == self.at:
            self.fired = True
            raise self.fault


_TICK = threading.Lock()


def _faulty(name):
    def call(self, *args, **kwargs):
        self._tick()
        result = getattr(fs.LocalFileSystem, name)(self, *args, **kwargs)
        self._tick()
        return result

    return call


for _name in FaultyLocal.METHODS:
    setattr(FaultyLocal, _name, _faulty(_name))

FAULTS = {
    "KeyboardInterrupt": lambda: KeyboardInterrupt(),
    "SystemExit": lambda: SystemExit(143),
    "ENOSPC": lambda: OSError(errno.ENOSPC, "No space left on device"),
    "EROFS": lambda: OSError(errno.EROFS, "Read-only file system"),
    "EACCES": lambda: OSError(errno.EACCES, "Permission denied"),
}


def step_os_calls(monkeypatch) -> list:
    """`os.replace` / `os.remove` (the local compare-and-rename and delete) as steps of the filesystem put in the
    returned list."""
    use: list[FaultyLocal] = []
    for name in ("replace", "remove"):
        real = getattr(os, name)

        def step(*args, _real=real, **kwargs):
            if use:
                use[0]._tick()
            result = _real(*args, **kwargs)
            if use:
                use[0]._tick()
            return result

        monkeypatch.setattr(os, name, step)
    return use
