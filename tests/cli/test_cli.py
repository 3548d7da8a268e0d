"""The CLI's own contract (`fewbit.cli`): bad arguments are one line, everything printed is safe for
the terminal and for a strict locale, and what a user typed is echoed sanitised and short."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fewbit.cli import build_parser, main

STRICT_UTF8 = {"LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8:strict"}


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every runnable (sub)command of `parser`, as argv prefixes: ("train",), ("data", "info"), ..."""
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subparsers:
        yield path
    for action in subparsers:
        for name, sub in action.choices.items():
            yield from _commands(sub, (*path, name))


COMMANDS = sorted(set(_commands(build_parser())))


def test_every_command_is_listed() -> None:
    assert {("train",), ("eval",), ("adapt",), ("sweep",), ("data", "info"), ("data", "show")} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_an_argument_error_is_one_line_pointing_at_help(capsys: pytest.CaptureFixture[str],
                                                        command: tuple[str, ...]) -> None:
    """argparse printed its usage (6-11 lines) before the error; now one line, as every other error."""
    with pytest.raises(SystemExit) as info:
        main([*command, "--no-such-flag"])
    captured = capsys.readouterr()
    assert info.value.code == 2 and captured.out == ""
    lines = captured.err.splitlines()
    assert lines == [f"fewbit: error: unrecognized arguments: --no-such-flag (see fewbit {' '.join(command)} --help)"] \
        or (len(lines) == 1 and lines[0].startswith("fewbit: error: the following arguments are required")
            and lines[0].endswith(f"(see fewbit {' '.join(command)} --help)")), captured.err


def test_bad_values_and_missing_commands_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, expect in (
        (["eval", "r", "--tasks", "x"],
         "fewbit: error: argument --tasks: expected an integer, got 'x' (see fewbit eval --help)"),
        (["nope"], "fewbit: error: argument COMMAND: invalid choice: 'nope'"),
        (["data"], "fewbit: error: the following arguments are required: ACTION (see fewbit data --help)"),
        (["export", "r", "--format", "x" * 5000], "fewbit: error: argument --format: invalid choice: 'xxx"),
    ):
        with pytest.raises(SystemExit) as info:
            main(argv)
        err = capsys.readouterr().err
        assert info.value.code == 2 and len(err.splitlines()) == 1 and err.startswith(expect), err
        assert len(err) <= 1100  # a huge value is cut, the line's end (the choices) kept
    assert "choose from" in err and "--help)" in err


def test_help_still_prints_the_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["adapt", "--help"])
    assert info.value.code == 0 and "usage: fewbit adapt" in capsys.readouterr().out


def _task_with_undecodable_names(root: Path) -> tuple[Path, Path]:
    """Support and query class folders; the query files are named with byte 0xff (not UTF-8)."""
    rng = np.random.default_rng(0)
    for split in ("support", "query"):
        for label in ("a", "b"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(2):
                name = b"\xff%d.png" % i if split == "query" else b"%d.png" % i
                pixels = (rng.random((28, 28)) * 255).astype(np.uint8)
                Image.fromarray(pixels).save(os.fsdecode(os.fsencode(folder) + b"/" + name), format="PNG")
    return root / "support", root / "query"


def _fewbit(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, **STRICT_UTF8, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "fewbit", *argv], cwd=cwd, env=env, capture_output=True, timeout=120)


def test_adapt_prints_file_names_that_are_not_utf8_under_a_strict_locale(tmp_path: Path) -> None:
    """The results were computed, then printing a name with byte 0xff raised UnicodeEncodeError."""
    support, query = _task_with_undecodable_names(tmp_path)
    argv = ["adapt", "--model", "glyphs-conv4-w4", "--support", str(support), "--query", str(query)]
    text = _fewbit(argv, tmp_path)
    assert text.returncode == 0 and b"Traceback" not in text.stderr, text.stderr.decode(errors="replace")
    out = text.stdout.decode("utf-8")  # strict: valid UTF-8
    assert "a/\\xff0.png" in out and "b/\\xff1.png" in out and "accuracy:" in out
    as_json = _fewbit([*argv, "--json"], tmp_path)
    assert as_json.returncode == 0, as_json.stderr.decode(errors="replace")
    data = json.loads(as_json.stdout.decode("utf-8"))
    files = [p["file"] for p in data["predictions"]]
    assert len(files) == 4 and all(f.endswith(("\\xff0.png", "\\xff1.png")) for f in files)
    json.dumps(data).encode("utf-8")  # every string is valid Unicode (no lone surrogates)
    (query / "a" / os.fsdecode(b"\xff0.png")).write_bytes(b"not an image")  # and an error naming such a file
    error = _fewbit(argv, tmp_path)
    lines = error.stderr.decode("utf-8").splitlines()
    assert error.returncode == 2 and len(lines) == 1 and "\\xff0.png" in lines[0], lines


def test_control_characters_never_reach_the_terminal(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    name = "evil\x1b[2J\x1b]0;owned\x07\nname"
    code = main(["eval", "--model", name, "--dataset", "glyphs"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "\x1b" not in err and "\x07" not in err
    assert "evil\\nname" in err


@pytest.mark.parametrize("command", [["adapt", "--support", "s", "--query", "q"], ["export", "--out", "m.onnx"],
                                     ["eval", "--dataset", "glyphs"]])
def test_a_huge_model_name_is_echoed_short(capsys: pytest.CaptureFixture[str], command: list[str]) -> None:
    """A 100 KB `--model` name was quoted whole in the error line."""
    name = "m" * 100_000
    code = main([*command, "--model", name])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and len(err) < 400, len(err)
    assert "mmm...mmm" in err and ("no shipped model" in err or "neither a .fewbit file" in err)
