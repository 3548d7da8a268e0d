"""Pieces shared by the CLI commands: the Output type, common flags, and table printing."""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fewbit.data.registry import option_defaults, option_fields
from fewbit.device import DEVICE_CHOICES
from fewbit.evaluation import check_task_count


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


def add_config_flags(parser: argparse.ArgumentParser, fields: Iterable[dataclasses.Field[Any]],
                     *, where: Mapping[str, Sequence[str]] | None = None) -> None:
    """One flag per config field (`--image-size` for `image_size`), typed from the field's type and
    default, with the help, choices and metavar its `fewbit.config.setting` gives; fields marked
    `flag=False` get none. An absent flag is None, so a config file's value or the default stands;
    the config validates what is given. `where` names, per field, the kinds it belongs to (shown in
    the help)."""
    for f in fields:
        meta = f.metadata
        if not meta.get("flag", True) or f"--{f.name.replace('_', '-')}" in parser._option_string_actions:
            continue
        choices = meta.get("choices")
        choices = choices() if callable(choices) else choices
        help_text = meta.get("help") or None
        help_text = help_text() if callable(help_text) else help_text
        if help_text and where and f.name in where:
            help_text += f" [{', '.join(where[f.name])}]"
        name = f.name.replace("_", "-")
        kind = str(f.type)
        if kind == "bool":
            if f.default is True:
                parser.add_argument(f"--no-{name}", dest=f.name, action="store_const", const=False, default=None,
                                    help=help_text and f"do not {help_text[0].lower()}{help_text[1:]}")
            else:
                parser.add_argument(f"--{name}", dest=f.name, action="store_const", const=True, default=None,
                                    help=help_text)
            continue
        parse: Any = str
        if kind.startswith("int"):
            parse = integer
        elif kind.startswith("float"):
            parse = finite_float
        elif kind.startswith("tuple[float"):
            parse = fractions
        if meta.get("parse") is not None:
            parse = meta["parse"]
        if choices is not None:
            parse = _choice(parse, tuple(choices))
        parser.add_argument(f"--{name}", dest=f.name, type=parse, default=None, help=help_text,
                            metavar=meta.get("metavar") or (None if choices is None else "{" + ",".join(
                                str(c) for c in choices) + "}"))


def config_flag_values(args: argparse.Namespace, fields: Iterable[dataclasses.Field[Any]]) -> dict[str, Any]:
    """The config fields given as flags (absent ones left out)."""
    return {f.name: getattr(args, f.name) for f in fields if getattr(args, f.name, None) is not None}


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """The flags of every registered data kind's reading options (`fewbit.data.registry`)."""
    add_config_flags(parser, option_fields().values(),
                     where={name: kinds for name, (_, kinds) in option_defaults().items()})


def data_option_values(args: argparse.Namespace) -> dict[str, Any]:
    """The data options given on the command line (absent ones left out)."""
    return config_flag_values(args, option_fields().values())


def integer(text: str) -> int:
    """argparse type: an integer (its range is the config's to check)."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text[:40]!r}") from None


def _choice(parse: Any, choices: tuple[Any, ...]) -> Any:
    def parse_choice(text: str) -> Any:
        value = parse(text)
        if value not in choices:
            raise argparse.ArgumentTypeError(f"choose one of {', '.join(str(c) for c in choices)}, got {text[:40]!r}")
        return value

    parse_choice.__name__ = getattr(parse, "__name__", "value")
    return parse_choice
