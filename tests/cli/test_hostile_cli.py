"""Bad input through every command: one line, exit 2, nothing lost; results never silently thrown away."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fewbit.cli import main
from tests.bounded import one_line_error, run_bounded


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def error_line(capsys, *argv: str) -> str:
    code, _, err = run_cli(capsys, *argv)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("fewbit: error:"), (code, err)
    return lines[0]


@pytest.fixture(scope="module")
def image_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained protonet run on the embedded glyphs (mlp backbone, 2 steps)."""
    run = tmp_path_factory.mktemp("hostile") / "run"
    assert main(["train", "--dataset", "glyphs", "--algorithm", "protonet", "--backbone", "mlp", "--ways", "3",
                 "--queries", "2", "--meta-batch", "1", "--steps", "2", "--val-every", "2", "--val-tasks", "2",
                 "--out", str(run), "--quiet", "--device", "cpu"]) == 0
    return run


def _files(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()
            and p.name != ".fewbit.lock"}


def test_a_config_that_is_not_utf8(capsys, tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_bytes(b"dataset: glyphs\n\xff\xfe: 1\n")
    assert "is not UTF-8 text" in error_line(capsys, "train", "--config", str(config), "--out", str(tmp_path / "r"))
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("size", ["8", "12", "15"])
def test_images_too_small_for_the_backbone(capsys, tmp_path: Path, size: str) -> None:
    line = error_line(capsys, "train", "--dataset", "glyphs", "--image-size", size, "--out", str(tmp_path / "r"))
    assert f"{size}x{size} images are too small for the conv4 backbone" in line and "--image-size 16" in line
    line = error_line(capsys, "train", "--dataset", "glyphs", "--backbone", "resnet12", "--image-size", size,
                      "--out", str(tmp_path / "r"))
    assert "too small for the resnet12 backbone" in line


def test_image_size_12_works_where_the_backbone_allows_it(capsys, tmp_path: Path) -> None:
    from tests.conftest import make_omniglot_folder

    images = make_omniglot_folder(tmp_path / "data", root="bg", alphabets=3, characters=3, drawings=4, seed=2)
    code, out, err = run_cli(capsys, "train", "--dataset", f"omniglot:{images}", "--backbone", "mlp",
                             "--image-size", "12", "--ways", "3", "--queries", "2", "--meta-batch", "1", "--steps", "1",
                             "--val-every", "0", "--out", str(tmp_path / "r"), "--quiet", "--device", "cpu")
    assert code == 0, err


def test_seeds_beyond_what_torch_takes(capsys, tmp_path: Path) -> None:
    huge = "99999999999999999999999"
    for command in (["eval", str(tmp_path)], ["data", "show", "glyphs"], ["sweep", "--out", str(tmp_path / "s")]):
        with pytest.raises(SystemExit) as info:
            main([*command, "--seed", huge])
        assert info.value.code == 2
        assert "--seed: must be in [-2**63, 2**64 - 1]" in capsys.readouterr().err
    # train's flags come from TrainConfig, which checks the seed before anything is read
    line = error_line(capsys, "train", "--dataset", "glyphs", "--out", str(tmp_path / "r"), "--seed", huge)
    assert "TrainConfig.seed: must be an integer in [-2**63, 2**64 - 1]" in line
    config = tmp_path / "c.yaml"
    config.write_text(f"dataset: glyphs\nseed: {huge}\n")
    assert "TrainConfig.seed" in error_line(capsys, "train", "--config", str(config), "--out", str(tmp_path / "r"))


@pytest.mark.parametrize("flag", ["--inner-lr", "--outer-lr", "--grad-clip"])
@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_non_finite_training_numbers(capsys, tmp_path: Path, flag: str, value: str) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--dataset", "glyphs", f"{flag}={value}", "--out", str(tmp_path / "r")])
    assert "must be a finite number" in capsys.readouterr().err
    config = tmp_path / "c.yaml"
    yaml_value = {"inf": ".inf", "nan": ".nan", "-inf": "-.inf"}[value]
    config.write_text(f"dataset: glyphs\n{flag[2:].replace('-', '_')}: {yaml_value}\n")
    assert "must be a number > 0" in error_line(capsys, "train", "--config", str(config), "--out", str(tmp_path / "r"))


@pytest.mark.parametrize("owned", ["checkpoints/best.safetensors", "checkpoints/new.fewbit", "config.yaml",
                                   "metrics.jsonl", "eval.json", ".fewbit.lock"])
def test_export_never_writes_over_a_runs_own_files(capsys, image_run: Path, owned: str) -> None:
    before = _files(image_run)
    line = error_line(capsys, "export", str(image_run), "--out", str(image_run / owned))
    assert f"is part of the run {image_run.resolve()}" in line
    assert _files(image_run) == before


def test_export_into_another_runs_files_and_through_a_symlink(capsys, image_run: Path, tmp_path: Path) -> None:
    link = tmp_path / "innocent.fewbit"
    link.symlink_to(image_run / "config.yaml")
    assert "is part of the run" in error_line(capsys, "export", str(image_run), "--out", str(link))
    assert "is part of the run" in error_line(capsys, "data", "show", "glyphs", "--out", str(image_run / "config.yaml"))
    code, out, err = run_cli(capsys, "export", str(image_run), "--out", str(tmp_path / "ok.fewbit"))
    assert code == 0, err


def test_eval_on_a_read_only_run_prints_the_result_and_warns(capsys, image_run: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import fewbit.cli.train

    def read_only(path, obj):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(fewbit.cli.train, "atomic_write_json", read_only)
    code, out, err = run_cli(capsys, "eval", str(image_run), "--tasks", "3", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["tasks"] == 3 and 0 <= result["accuracy"] <= 1
    warning = [line for line in err.splitlines() if line.startswith("fewbit: warning:")]
    assert len(warning) == 1 and "could not write" in warning[0] and "Read-only file system" in warning[0]


def test_json_output_never_holds_nan(capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    import fewbit.cli.train as train_cli

    monkeypatch.setattr(train_cli, "run_eval", lambda args: train_cli.Output({"a": {"b": [1.0, float("nan")]}}))
    line = error_line(capsys, "eval", "run", "--json")
    assert "non-finite number at a.b.1" in line


def test_restart_needs_resume(capsys) -> None:
    assert "give it with --resume" in error_line(capsys, "train", "--restart", "--dataset", "glyphs")


def test_a_closed_pipe_is_not_a_traceback(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-m", "fewbit", "data", "info", "glyphs"], cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.stdout is not None and child.stderr is not None
    child.stdout.close()  # like `fewbit data info glyphs | head -c 0`
    err = child.stderr.read().decode()
    assert child.wait(timeout=60) == 141 and "Traceback" not in err and "BrokenPipe" not in err


def test_the_image_size_limit_is_one_value() -> None:
    from fewbit.data import ImageOptions, InkOptions
    from fewbit.errors import ConfigError
    from fewbit.runtime.limits import MAX_IMAGE_SIDE

    for options in (ImageOptions, InkOptions):  # every size a model trains at exports a loadable artifact
        assert options(image_size=MAX_IMAGE_SIDE).image_size == MAX_IMAGE_SIDE
        with pytest.raises(ConfigError, match="image_size"):
            options(image_size=MAX_IMAGE_SIDE + 1)


def test_sweep_config_values_of_the_wrong_type(capsys, tmp_path: Path) -> None:
    for text, message in (("base: 5\n", "SweepConfig.base"), ("bits: 4\n", "SweepConfig.bits: must be a list"),
                          ("sparsity: [a]\n", "SweepConfig.sparsity")):
        config = tmp_path / "s.yaml"
        config.write_text(text)
        assert message in error_line(capsys, "sweep", "--config", str(config), "--out", str(tmp_path / "s"))
    config.write_text(yaml.safe_dump({"base": {"dataset": "glyphs", "ways": "x"}}))
    assert "TrainConfig.ways" in error_line(capsys, "sweep", "--config", str(config), "--out", str(tmp_path / "s"))


def test_a_huge_image_size_for_data_commands_is_refused_before_loading(tmp_path: Path) -> None:
    result = run_bounded(["data", "info", "glyphs", "--image-size", "100000"], tmp_path, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "InkOptions.image_size: must be a whole number of pixels 8..512, got 100000" in result.stderr
    line = one_line_error(run_bounded(["train", "--dataset", "glyphs", "--image-size", "100000", "--out", "r"],
                                      tmp_path, timeout=60))
    assert "TrainConfig.data: InkOptions.image_size: must be a whole number of pixels 8..512" in line


def test_an_artifact_path_that_is_a_fifo_or_a_device(capsys, tmp_path: Path) -> None:
    import os
    import signal

    os.mkfifo(tmp_path / "m.fewbit")  # reading it used to block forever; /dev/zero was read up to 1 GiB
    (tmp_path / "zero.fewbit").symlink_to("/dev/zero")

    def hung(*args: object) -> None:
        raise TimeoutError("the command blocked reading a FIFO")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(30)
    try:
        for target in (str(tmp_path / "m.fewbit"), str(tmp_path / "zero.fewbit")):
            for command in (["inspect", target], ["adapt", target, "--support", ".", "--query", "."]):
                assert "is not a regular file" in error_line(capsys, *command)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_export_refuses_a_scope_the_runtime_would_not_follow(capsys, image_run: Path, tmp_path: Path) -> None:
    line = error_line(capsys, "export", str(image_run), "--scope", "everything", "--out", str(tmp_path / "m.fewbit"))
    assert "--scope: scope must be none or a +-joined subset of head, bias, norm" in line
    assert not (tmp_path / "m.fewbit").exists()
