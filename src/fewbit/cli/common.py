"""Pieces shared by the CLI commands: the Output type, common flags, and table printing."""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from fewbit.device import DEVICE_CHOICES


@dataclasses.dataclass
class Output:
    """What a command returns: a JSON object (`--json`) and the text a person reads."""

    data: dict[str, Any]
    text: str = ""
    status: int = 0


def add_common(parser: argparse.ArgumentParser, device: bool = False, threads: bool = False) -> None:
    """Add `--json`, `--device` when the command computes with torch, `--threads` when it computes at all."""
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    if device:
        parser.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="where to compute (default auto)")
    if threads:
        parser.add_argument(
            "--threads", type=positive_int, metavar="N",
            help="CPU threads to compute with (default: the cores this process may use, or OMP_NUM_THREADS)",
        )


def bounded_int(low: int, high: int) -> Any:
    """argparse type: an integer in [low, high]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text[:40]!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be in {low}..{high}, got {text[:40]}")
        return value

    parse.__name__ = "integer"
    return parse


def seed_int(text: str) -> int:
    """argparse type: a random seed torch accepts (-2**63 .. 2**64-1)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text[:40]!r}") from None
    if not -(1 << 63) <= value <= (1 << 64) - 1:
        raise argparse.ArgumentTypeError(f"must be in [-2**63, 2**64 - 1], got {text[:40]}")
    return value


def finite_float(text: str) -> float:
    """argparse type: a finite number (inf and nan turn every weight into NaN)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text[:40]!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text[:40]}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text[:40]!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def nonnegative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text[:40]!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table with aligned columns."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
