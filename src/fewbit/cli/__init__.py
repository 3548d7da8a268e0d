"""The `fewbit` command line: thin parsers over the Python API.

Each command module registers its subcommands with `register(subparsers)`; a handler takes the
parsed arguments and returns an `Output` (a JSON object and the text a person reads).
Errors of the FewbitError family, and bad arguments, are printed as one line with exit status 2.
Everything is printed through `_print`, which makes the text safe for the terminal and for the
stream's encoding: a file name's undecodable bytes, control characters and escape sequences are
written as escapes (`\\xff`), never raised as an encoding error after the work is done.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any, NoReturn, TextIO

from fewbit import __version__
from fewbit._io import non_finite_path
from fewbit.cli.common import Output
from fewbit.errors import FewbitError, shown
from fewbit.threads import bounded_threads, limited

# One module per command group, each with a `register(subparsers)`.
COMMAND_MODULES = ("data", "train", "compress", "deploy", "sweep", "search", "demo")
MAX_LINE_CHARS = 1000  # an error or warning line is cut (in its middle) to this length
_COMMAND_PROG = "_fewbit_command_prog"  # where parsing notes the innermost command parsed


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, `fewbit: error: ... (see PROG --help)`, exit 2.

    Subcommand parsers are of the same class (argparse makes them with the parent's class).
    """

    def error(self, message: str, prog: str | None = None) -> NoReturn:
        _print(f"fewbit: error: {_line(message)} (see {prog or self.prog} --help)", sys.stderr)
        self.exit(2)

    def parse_known_args(self, args: Sequence[str] | None = None,
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        """As argparse's, noting the innermost command parsed (for the `--help` an error points at)."""
        parsed, extras = super().parse_known_args(args, namespace)
        if not hasattr(parsed, _COMMAND_PROG):
            setattr(parsed, _COMMAND_PROG, self.prog)
        return parsed, extras

    def parse_args(self, args: Sequence[str] | None = None,
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        """As argparse's; arguments no parser took are an error pointing at the command's `--help`."""
        parsed, extras = self.parse_known_args(args, namespace)
        prog = getattr(parsed, _COMMAND_PROG, None)
        delattr(parsed, _COMMAND_PROG)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}", prog)
        return parsed


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available command."""
    parser = OneLineParser(prog="fewbit", description="Meta-learning on compressed models.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"fewbit.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:

        _print(__version__, sys.stdout)
        return 0
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2

    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning
            if getattr(args, "threads", None) is not None:
                args.threads = bounded_threads(args.threads)  # once, so that workers see the bounded count
            with limited(getattr(args, "threads", None)):
                out: Output = args.handler(args)
            text = _json_text(out.data) if getattr(args, "json", False) else out.text
    except FewbitError as exc:
        _print(f"fewbit: error: {_line(str(exc))}", sys.stderr)
        return 2
    except OSError as exc:
        where = shown(exc.filename) if exc.filename is not None else ""
        _print(f"fewbit: error: {_line(str(exc.strerror or exc))}: {where}".rstrip(": "), sys.stderr)
        return 2
    except KeyboardInterrupt:
        _print("fewbit: interrupted", sys.stderr)
        return 130
    if text:
        try:
            _print(text, sys.stdout)
        except BrokenPipeError:  # `fewbit ... | head`: the reader left; not an error of ours
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
            return 141
    return out.status


def _print(text: str, stream: TextIO) -> None:
    """Print `text` to `stream`: each line through `shown` (escapes, no terminal control), then
    whatever the stream's encoding cannot write as a backslash escape. The only place that prints."""
    text = "\n".join(shown(line, None) for line in text.split("\n"))
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        text = text.encode(encoding, "backslashreplace").decode(encoding)
    except LookupError:  # a stream that names no codec Python knows: ASCII is safe in any
        text = text.encode("ascii", "backslashreplace").decode("ascii")
    print(text, file=stream, flush=True)


def _json_text(data: object) -> str:
    """`data` as JSON (ASCII, every string valid Unicode); a NaN or infinity (which JSON lacks) is a
    FewbitError naming where it is."""

    try:
        return json.dumps(_valid_unicode(data), default=_jsonable, allow_nan=False)
    except ValueError:

        where = non_finite_path(data) or "?"
        raise FewbitError(f"the result holds a non-finite number at {where}; this is a bug, please report it") from None


def _valid_unicode(obj: Any) -> Any:
    """`obj` with each string that holds a file name's undecodable bytes (lone surrogates, which
    JSON readers reject or mangle) written as `shown` writes them (`\\xff`); all else as it is."""
    if isinstance(obj, str):
        try:
            obj.encode("utf-8")
        except UnicodeEncodeError:
            return "".join(shown(ch, None) if "\ud800" <= ch <= "\udfff" else ch for ch in obj)
        return obj
    if isinstance(obj, dict):
        return {_valid_unicode(k): _valid_unicode(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_valid_unicode(v) for v in obj]
    return obj


def _jsonable(obj: object) -> object:
    if hasattr(obj, "tolist"):
        return _valid_unicode(obj.tolist())
    return _valid_unicode(str(obj))  # a Path, say


def _line(text: str) -> str:
    """A message as one line of at most MAX_LINE_CHARS (newlines and runs of spaces made one space)."""
    return shown(" ".join(text.split()) if "\n" in text else text, MAX_LINE_CHARS)


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      file: TextIO | None = None, line: str | None = None) -> None:
    """Warnings print as `fewbit: warning: ...`, one line, without the source line that raised them."""
    _print(f"fewbit: warning: {_line(str(message))}", file or sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
