"""The run-directory lock: a second writer is refused with who holds it; the lock dies with its process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fewbit._lock import LOCK_NAME, locked
from fewbit.errors import InUseError

HOLD = """
import sys, time
from fewbit._lock import locked
with locked(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def _holder(directory: Path) -> subprocess.Popen[str]:
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(directory)], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "held"
    return child


def test_a_second_writer_is_told_who_holds_the_lock_until_it_dies(tmp_path: Path) -> None:
    child = _holder(tmp_path)
    try:
        with pytest.raises(InUseError) as info, locked(tmp_path):
            pass
        message = str(info.value)
        assert f"pid {child.pid} on host {socket.gethostname()}" in message and "\n" not in message
    finally:
        child.send_signal(signal.SIGKILL)  # the hardest way to die: the kernel still drops the lock
        child.wait()
    deadline = time.monotonic() + 10
    while True:
        try:
            with locked(tmp_path) as path:
                assert path == tmp_path / LOCK_NAME and str(os.getpid()) in path.read_text()
            break
        except InUseError:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_the_lock_is_released_after_the_block_and_taken_again(tmp_path: Path) -> None:
    import json

    with locked(tmp_path) as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()  # the file names its holder
        with pytest.raises(InUseError, match=f"sweep {tmp_path} is in use by pid {os.getpid()}"), \
                locked(tmp_path, what="sweep"):
            pass  # flock locks conflict between two opens, even in one process
    with locked(tmp_path, what="sweep") as path:  # released at the end of the block: taken again
        assert path.exists()


@pytest.mark.parametrize("kind", ["link", "dangling", "fifo"])
def test_a_lock_that_is_a_link_or_fifo_is_refused_and_nothing_outside_is_written(tmp_path: Path, kind: str) -> None:
    """Issue 24: a lock linked to ../../victim.txt was truncated and overwritten; a dangling one created it."""
    from fewbit.errors import FewbitFormatError

    run = tmp_path / "run"
    run.mkdir()
    victim = tmp_path / "victim.txt"
    if kind == "link":
        victim.write_text("precious\n")
        (run / LOCK_NAME).symlink_to("../victim.txt")
    elif kind == "dangling":
        (run / LOCK_NAME).symlink_to("../victim.txt")
    else:
        os.mkfifo(run / LOCK_NAME)
    refused = pytest.raises(FewbitFormatError, match=r"\.fewbit\.lock is (a symbolic link|a FIFO); a lock is a regular")
    with refused, locked(run):
        pass
    if kind == "link":
        assert victim.read_text() == "precious\n"
    else:
        assert not victim.exists()


def test_the_holders_text_is_echoed_escaped_and_short(tmp_path: Path) -> None:
    """Issue 24: the lock file's text (ANSI escapes included) was echoed raw into the refusal."""
    import fcntl
    import json

    run = tmp_path / "run"
    run.mkdir()
    fd = os.open(run / LOCK_NAME, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, json.dumps({"pid": 7, "host": "h\x1b[2J", "command": "x" * 3_000 + "\x1b]0;pwned\x07",
                                 "since": "\x1b[31mnow"}).encode())
        with pytest.raises(InUseError) as info, locked(run):
            pass
    finally:
        os.close(fd)
    message = str(info.value)
    assert "\x1b" not in message and "\x07" not in message and len(message) < 600
    assert message.startswith(f"run {run} is in use by pid 7 on host h")
