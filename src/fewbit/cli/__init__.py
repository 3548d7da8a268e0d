"""The `fewbit` command line: thin parsers over the Python API.

Each command module registers its subcommands with `register(subparsers)`; a handler takes the
parsed arguments and returns an `Output` (a JSON object and the text a person reads).
Errors of the FewbitError family are printed as one line with exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
import warnings
from collections.abc import Sequence

from fewbit.cli.common import Output

# One module per command group; a module that does not exist yet is simply not offered.
COMMAND_MODULES = ("data", "train", "compress", "deploy", "sweep", "demo")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available command."""
    parser = argparse.ArgumentParser(prog="fewbit", description="Meta-learning on compressed models.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module_name = f"fewbit.cli.{name}"
        if importlib.util.find_spec(module_name) is None:
            continue
        importlib.import_module(module_name).register(sub)
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
    previous_format = warnings.formatwarning
    warnings.formatwarning = _one_line_warning
    try:
        out: Output = args.handler(args)
    except FewbitError as exc:
        print(f"fewbit: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"fewbit: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fewbit: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = previous_format
    if getattr(args, "json", False):
        print(json.dumps(out.data, default=_jsonable))
    elif out.text:
        print(out.text)
    return out.status


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      line: str | None = None) -> str:
    """Warnings as a user reads them: `fewbit: warning: ...`, without the source line that raised them."""
    return f"fewbit: warning: {message}\n"


def _jsonable(obj: object) -> object:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
