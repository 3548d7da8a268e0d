"""Helpers shared by the data tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def rename_to_bytes(path: Path, name: bytes) -> Path:
    """Rename `path` to `name` (bytes that need not be UTF-8) in its folder; the path as Python lists it.

    Skips the test where the file system refuses such a name (some only store UTF-8).
    """
    new = os.path.join(os.fsencode(path.parent), name)
    try:
        os.rename(os.fsencode(path), new)
    except OSError as exc:
        pytest.skip(f"the file system refuses the name {name!r} ({exc})")
    return Path(os.fsdecode(new))
