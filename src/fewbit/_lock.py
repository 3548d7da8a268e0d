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
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

from fewbit._io import node_kind
from fewbit.errors import FewbitFormatError, InUseError, shown

LOCK_NAME = ".fewbit.lock"

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no advisory locks, nothing is refused
    fcntl = None  # type: ignore[assignment]


@contextlib.contextmanager
def locked(directory: str | os.PathLike[str], *, what: str = "run") -> Iterator[Path]:
    """Hold the lock of `directory` (which must exist) for the `with` block; InUseError when taken.

    The lock file is opened without following a link and must be a regular file: a link or FIFO
    planted in its place is refused (FewbitFormatError) and nothing outside the directory is written.
    """
    path = Path(directory) / LOCK_NAME
    fd = _open_lock(path)
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


def _open_lock(path: Path) -> int:
    flags = os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise FewbitFormatError(
            f"{path} is a symbolic link; a lock is a regular file fewbit makes: remove the link and try again"
        ) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise FewbitFormatError(
            f"{path} is {node_kind(info.st_mode)}; a lock is a regular file fewbit makes: remove it and try again"
        )
    return fd


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
        text = f"pid {int(info['pid'])} on host {shown(str(info['host']), 64)}"
    except (OSError, ValueError, KeyError, TypeError, OverflowError):
        return "another process"
    if info.get("command"):  # the file is anyone's to write: its text is echoed escaped and short
        text += f" ({shown(str(info['command']), 120)}, since {shown(str(info.get('since', '?')), 40)})"
    return text
