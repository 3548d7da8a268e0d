"""Atomic file writes: a reader never sees a half-written file."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from fewbit.errors import FewbitError


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temp file beside `path`; on success fsync and rename it over `path`."""
    path = Path(path)
    if path.is_dir():  # say so of `path` itself, not of the temp file beside it
        raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
    check_replaceable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a written file gets the usual mode
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def check_replaceable(path: str | os.PathLike[str]) -> None:
    """Refuse to write `path` when it exists and is not a regular file (a device, FIFO, socket or
    symbolic link): a rename over it would replace the node itself, such as `/dev/null` for root.

    Raises `OutputError` (an OSError the CLI prints as one line).
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError:
        return  # unreadable parent and the like: the write itself reports it
    if stat.S_ISREG(info.st_mode):
        return
    raise OutputError(
        f"{path} exists and is {node_kind(info.st_mode)}; fewbit writes only new or regular files: "
        "remove it or write elsewhere"
    )


class OutputError(FewbitError, FileExistsError):
    """An output path that names something fewbit must not replace (a device, FIFO, link, folder)."""


def node_kind(mode: int) -> str:
    """What a file mode describes, in words: `a symbolic link`, `a FIFO`, ..."""
    kinds = (
        (stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"),
    )
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write `obj` as indented JSON to `path` atomically (ValueError for NaN or infinity: not JSON)."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")


def finite_or_none(value: Any) -> Any:
    """`value`, or None when it is a float that is NaN or infinite (JSON has no such numbers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def non_finite_path(obj: Any) -> str | None:
    """Where the first NaN or infinity in a JSON-like tree is (`a.b.0`), or None when it has none.

    Python's json module reads `NaN` and `Infinity` although JSON has no such values; anything
    that came from a file is checked before it is trusted or written back out.
    """
    stack: list[tuple[Any, str]] = [(obj, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, float) and not math.isfinite(node):
            return path or "the top"
        if isinstance(node, dict):
            stack.extend((v, f"{path}.{k}" if path else str(k)) for k, v in node.items())
        elif isinstance(node, (list, tuple)):
            stack.extend((v, f"{path}.{i}" if path else str(i)) for i, v in enumerate(node))
    return None


def open_append(path: str | os.PathLike[str]) -> IO[str]:
    """`path` opened to append UTF-8 text, created if missing; never through a symbolic link, and
    only a regular file (OutputError otherwise): appends stay inside the folder they were meant for."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise OutputError(f"{path} is a symbolic link; fewbit appends only to regular files: remove it") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise OutputError(f"{path} is {node_kind(info.st_mode)}; fewbit appends only to regular files: remove it")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "a", encoding="utf-8")


def read_regular_file(path: str | os.PathLike[str], limit: int, what: str = "file") -> bytes:
    """The bytes of the regular file `path`, refusing anything else or anything over `limit` bytes.

    A FIFO would block a plain read forever and a device (`/dev/zero`) never ends, so the file is
    opened without blocking and checked with fstat before a byte is read. Errors are OSError
    (ValueError for a file that is not regular or too large), worded for one line.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"{what} {path} is not a regular file")
        if info.st_size > limit:
            raise ValueError(f"{what} {path} is {info.st_size} bytes, more than the {limit} a {what} may have")
        data = f.read(info.st_size + 1)  # read(n) reserves n bytes up front: ask for what the file holds
        while len(data) > info.st_size and len(data) <= limit:  # it grew while we read: go on in steps
            more = f.read(1 << 20)
            if not more:
                break
            data += more
    if len(data) > limit:
        raise ValueError(f"{what} {path} grew past {limit} bytes while being read")
    return data
