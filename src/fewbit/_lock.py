"""An advisory lock per directory, so that two processes never write one run (or sweep) at once.

The lock is `fcntl.flock` on `DIR/.fewbit.lock`: the kernel drops it when its process ends,
however it ends (kill -9 included), so a stale lock never needs cleaning up by hand. While the
lock is held the file names its holder (pid, host, command), which the refusal quotes.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

from fewbit.errors import InUseError

LOCK_NAME = ".fewbit.lock"

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no advisory locks, nothing is refused
    fcntl = None  # type: ignore[assignment]


@contextlib.contextmanager
def locked(directory: str | os.PathLike[str], *, what: str = "run") -> Iterator[Path]:
    """Hold the lock of `directory` (which must exist) for the `with` block; InUseError when taken."""
    path = Path(directory) / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                raise InUseError(
                    f"{what} {directory} is in use by {_holder(fd)}; wait for it to finish or stop it "
                    f"(the lock goes with its process)"
                ) from None
        _write_holder(fd)
        yield path
    finally:
        os.close(fd)


def _write_holder(fd: int) -> None:
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:])[:300] if sys.argv else "",
        "since": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode("utf-8"), 0)


def _holder(fd: int) -> str:
    """Who holds the lock, as its file says (it is written right after the lock is taken)."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        text = f"pid {int(info['pid'])} on host {info['host']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"
    if info.get("command"):
        text += f" ({info['command']}, since {info.get('since', '?')})"
    return text
