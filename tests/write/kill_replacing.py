"""Kill a replacement at a chosen filesystem change: `python kill_replacing.py FOLDER K...`.

FOLDER/<k>/ are copies of one output that holds a finished run and a staged one (`_staging/`).
For each K a forked child takes the output's lock, as a run does, and runs `promote` on FOLDER/K
with every filesystem change counted (each open for writing and each close of such a file, each
rename, remove, unlink, rmdir, mkdir, link) and a real SIGKILL sent to itself just before change
number K (0-based); the parent waits for it. K = -1 kills nowhere. Prints one JSON object:
{"K": [exit status or -signal, changes made]}.

Forking after the imports makes each kill cost milliseconds instead of a Python start-up; the
child runs only `promote` (no Beam pipeline, no thread but the lock's renewer, idle for a minute).
"""

from __future__ import annotations

import builtins
import io
import json
import os
import signal
import sys

from masked_shards.beam.outputs import hold_output, promote

_state = {"armed": False, "count": 0, "kill_at": -1}


def _change() -> None:
    if not _state["armed"]:
        return
    if _state["count"] == _state["kill_at"]:
        os.kill(os.getpid(), signal.SIGKILL)
    _state["count"] += 1


def _counted(function):
    def changed(*args, **kwargs):
        _change()
        return function(*args, **kwargs)

    return changed


class _Written:
    """A file open for writing whose close is a change too (a kill before it leaves the bytes
    still in Python's buffer: a torn or empty file)."""

    def __init__(self, handle) -> None:
        self._handle = handle

    def __getattr__(self, name: str):
        return getattr(self._handle, name)

    def close(self) -> None:
        if not self._handle.closed:
            _change()
        self._handle.close()

    def __enter__(self):
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


_open = builtins.open


def _opened(file, mode="r", *args, **kwargs):
    if _state["armed"] and any(c in mode for c in "wax+"):
        _change()
        return _Written(_open(file, mode, *args, **kwargs))
    return _open(file, mode, *args, **kwargs)


def main(folder: str, points: list[int]) -> None:
    for name in ("rename", "replace", "remove", "unlink", "rmdir", "mkdir", "link"):
        setattr(os, name, _counted(getattr(os, name)))
    builtins.open = io.open = _opened
    outcome = {}
    for point in points:
        output = os.path.join(folder, str(point))
        read, write = os.pipe()
        child = os.fork()
        if child == 0:
            os.close(read)
            with hold_output(output):
                _state.update(armed=True, kill_at=point)
                promote(output)
                _state["armed"] = False
            os.write(write, str(_state["count"]).encode())
            os._exit(0)
        os.close(write)
        _, status = os.waitpid(child, 0)
        with os.fdopen(read, "rb") as pipe:
            changes = pipe.read().decode()
        outcome[point] = [-os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status), int(changes or -1)]
    print(json.dumps(outcome))


if __name__ == "__main__":
    main(sys.argv[1], [int(k) for k in sys.argv[2:]])
