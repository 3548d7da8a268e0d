"""Pieces shared by the CLI commands: the Output type, common flags, and table printing."""

from __future__ import annotations

import argparse
import dataclasses
import math
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


def task_count(text: str) -> int:
    """argparse type: a number of tasks to score, 1..`fewbit.evaluation.MAX_TASKS`."""
    from fewbit.evaluation import check_task_count

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text[:40]!r}") from None
    return check_task_count(value, "", argparse.ArgumentTypeError)


def nonnegative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text[:40]!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def fractions(text: str) -> tuple[float, float]:
    """argparse type: `train,val` shares, e.g. `0.7,0.15` (test takes the rest)."""
    parts = text.split(",")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two numbers like 0.6,0.2, got {text!r}") from None
    if len(values) != 2:
        raise argparse.ArgumentTypeError(f"expected the train and val shares, like 0.6,0.2, got {text!r}")
    return values  # type: ignore[return-value]


def add_data_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """The flags of `fewbit.data.DataOptions` (how a source is read). With `defaults=False` an absent
    flag is None, so that a config file's value stands."""
    # Commands that read data check the size here; a training config checks it as it validates.
    parser.add_argument("--image-size", type=bounded_int(1, 512) if defaults else positive_int,
                        default=28 if defaults else None, help="resize images to N x N pixels (default 28)")
    parser.add_argument("--channels", type=int, choices=(1, 3), default=None,
                        help="1 (greyscale) or 3 (RGB); default: detected (RGB when any image holds colour)")
    parser.add_argument("--invert", action="store_const", const=True, default=None,
                        help="invert images (dark strokes on light paper, like Omniglot's files)")
    parser.add_argument("--no-normalize", dest="normalize", action="store_const", const=False, default=None,
                        help="keep pixels in [0, 1] (default: standardise each channel with training statistics)")
    parser.add_argument("--resize", choices=("crop", "stretch"), default=None,
                        help="crop: shorter side to the size, then the centre (default); stretch: both sides")
    parser.add_argument("--split-fractions", type=fractions, default=None, metavar="TRAIN,VAL",
                        help="shares of classes (groups) for train and val when the data has no split folders "
                             "(default 0.6,0.2; test takes the rest)")
    parser.add_argument("--split-seed", type=seed_int, default=None, help="seed of that split (default 0)")
    parser.add_argument("--label-column", default=None, help="a csv: table's label column (default: the last)")


DATA_OPTION_FIELDS = ("image_size", "channels", "invert", "normalize", "resize", "split_fractions", "split_seed",
                      "label_column")


def data_option_values(args: argparse.Namespace) -> dict[str, Any]:
    """The data options given on the command line (absent ones left out)."""
    return {f: getattr(args, f) for f in DATA_OPTION_FIELDS if getattr(args, f, None) is not None}
