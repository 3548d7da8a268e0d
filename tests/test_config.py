"""`load_yaml`: the front door of every config file, bounded in size, encoding and alias expansion."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fewbit.config import MAX_CONFIG_BYTES, check, load_yaml
from fewbit.errors import ConfigError
from tests.bounded import one_line_error, run_bounded


def alias_bomb(path: Path, levels: int = 9) -> Path:
    """A 'billion laughs' YAML: 9 levels of 9 aliases each expand to 9**9 (387 million) values."""
    lines = ["a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    lines += [f"ways: *a{levels}", "dataset: glyphs"]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_an_alias_bomb_is_refused_cheaply(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expands to more than 10000 values"):
        load_yaml(alias_bomb(tmp_path / "bomb.yaml"))
    (tmp_path / "self.yaml").write_text("a: &a [1, *a]\n")
    with pytest.raises(ConfigError, match="contains itself"):
        load_yaml(tmp_path / "self.yaml")
    shared = "x: &x {a: 1, b: [1, 2]}\ny: *x\nz: *x\n"  # ordinary reuse is fine
    (tmp_path / "ok.yaml").write_text(shared)
    assert load_yaml(tmp_path / "ok.yaml")["z"] == {"a": 1, "b": [1, 2]}


def test_an_alias_bomb_through_the_cli_under_a_memory_limit(tmp_path: Path) -> None:
    bomb = alias_bomb(tmp_path / "bomb.yaml")
    line = one_line_error(run_bounded(["train", "--config", str(bomb), "--out", "r"], tmp_path, timeout=60))
    assert "expands to more than" in line and len(line) < 400


def test_files_that_are_not_utf8_text_or_not_regular_or_too_big(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"dataset: glyphs\n\xff\xfe: 1\n")
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte 0xff at offset 16\)"):
        load_yaml(bad)
    os.mkfifo(tmp_path / "fifo.yaml")
    with pytest.raises(ConfigError, match="not a regular file"):
        load_yaml(tmp_path / "fifo.yaml")
    with pytest.raises(ConfigError, match="not a regular file"):
        load_yaml("/dev/zero")
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (MAX_CONFIG_BYTES + 1))
    with pytest.raises(ConfigError, match="more than the"):
        load_yaml(big)
    deep = tmp_path / "deep.yaml"
    deep.write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError):
        load_yaml(deep)
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml(tmp_path / "missing.yaml")


def test_messages_quote_a_value_briefly() -> None:
    with pytest.raises(ConfigError) as info:
        check(False, "X", "y", f"got {list(range(10**5))!r}")
    assert len(str(info.value)) < 400


def test_an_alias_bomb_built_in_python_is_quoted_briefly() -> None:
    """The same bomb handed to the API: the message quotes a bounded repr (the full one is 9**9 values)."""
    import time

    from fewbit.sweep.grid import SweepConfig
    from fewbit.train import TrainConfig

    bomb: object = [1] * 9
    for _ in range(9):
        bomb = [bomb] * 9
    started = time.perf_counter()
    for build in (lambda: TrainConfig.from_dict({"dataset": "glyphs", "ways": bomb}),
                  lambda: TrainConfig.from_dict({"dataset": "glyphs", "inner_lr": bomb}),
                  lambda: SweepConfig.from_dict({"eval_tasks": bomb})):
        with pytest.raises(ConfigError) as info:
            build()
        assert len(str(info.value)) < 400
    assert time.perf_counter() - started < 5


def test_unknown_fields_of_any_key_type_are_listed() -> None:
    from fewbit.train import TrainConfig

    with pytest.raises(ConfigError, match=r"unknown field\(s\) '1', 'x'"):
        TrainConfig.from_dict({"dataset": "glyphs", 1: 2, "x": 3})  # sorting int and str keys raised TypeError
