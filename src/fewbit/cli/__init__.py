"""The `fewbit` command line: thin parsers over the Python API.

Each command module registers its subcommands with `register(subparsers)`; a handler takes the
parsed arguments and returns an `Output` (a JSON object and the text a person reads).
Errors of the FewbitError family are printed as one line with exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import warnings
from collections.abc import Sequence
from typing import TextIO

from fewbit.cli.common import Output

# One module per command group, each with a `register(subparsers)`.
COMMAND_MODULES = ("data", "train", "compress", "deploy", "sweep", "demo")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available command."""
    parser = argparse.ArgumentParser(prog="fewbit", description="Meta-learning on compressed models.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"fewbit.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    from fewbit.errors import FewbitError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from fewbit import __version__

        print(__version__)
        return 0
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    from fewbit.threads import limited

    try:
        with warnings.catch_warnings(), limited(getattr(args, "threads", None)):
            warnings.showwarning = _one_line_warning
            out: Output = args.handler(args)
            text = _json_text(out.data) if getattr(args, "json", False) else out.text
    except FewbitError as exc:
        print(f"fewbit: error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"fewbit: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fewbit: interrupted", file=sys.stderr)
        return 130
    if text:
        try:
            print(text, flush=True)
        except BrokenPipeError:  # `fewbit ... | head`: the reader left; not an error of ours
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
            return 141
    return out.status


def _json_text(data: object) -> str:
    """`data` as JSON; a NaN or infinity (which JSON lacks) is a FewbitError naming where it is."""
    from fewbit.errors import FewbitError

    try:
        return json.dumps(data, default=_jsonable, allow_nan=False)
    except ValueError:
        from fewbit._io import non_finite_path

        where = non_finite_path(data) or "?"
        raise FewbitError(f"the result holds a non-finite number at {where}; this is a bug, please report it") from None


def _jsonable(obj: object) -> object:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def _one_line(text: str) -> str:
    return " ".join(text.split()) if "\n" in text else text


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      file: TextIO | None = None, line: str | None = None) -> None:
    """Warnings print as `fewbit: warning: ...`, one line, without the source line that raised them."""
    print(f"fewbit: warning: {_one_line(str(message))}", file=file or sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
