"""`fewbit export`, `fewbit adapt`, `fewbit inspect` of an artifact: the contracts and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fewbit.cli import main
from fewbit.deploy import export, inspect_artifact
from tests.conftest import make_omniglot_folder
from tests.deploy.helpers import compressed_conv4, encode_allowing_nan, glyphs


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _write_images(root: Path, x: np.ndarray, y: np.ndarray, names: list[str], *, start: int = 0) -> None:
    """Class folders of black-on-white images of assorted sizes and formats (as people draw them)."""
    for i, (img, label) in enumerate(zip(x, y)):
        folder = root / names[label]
        folder.mkdir(parents=True, exist_ok=True)
        ink = Image.fromarray((255 - img[0] * 255).astype(np.uint8))  # white paper, dark strokes
        size = (28, 60, 105)[i % 3]
        ink = ink.resize((size, size), Image.Resampling.BICUBIC)
        if i % 4 == 3:
            ink.convert("RGB").save(folder / f"img{start + i}.jpg", quality=95)
        else:
            ink.save(folder / f"img{start + i}.png")


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("artifact") / "model.fewbit"
    export(compressed_conv4("quant:w4a8", ways=0), path, algorithm="protonet")
    return path


@pytest.fixture(scope="module")
def task_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("task")
    x, y = glyphs(4, 6, seed=11)
    names = ["alef", "bet", "gimel", "dalet"]
    first = np.arange(len(y)) % 6 < 1
    _write_images(root / "support", x[first], y[first], names)
    _write_images(root / "query", x[~first], y[~first], names, start=100)
    return root / "support", root / "query"


def test_adapt_json_contract(capsys, artifact, task_dirs) -> None:  # noqa: ANN001
    support, query = task_dirs
    code, out, err = run_cli(
        capsys, "adapt", str(artifact), "--support", str(support), "--query", str(query), "--json"
    )
    assert code == 0, err
    result = json.loads(out)
    assert len(result["predictions"]) == 20
    first = result["predictions"][0]
    assert set(first) == {"file", "label", "score"} and first["label"] in {"alef", "bet", "gimel", "dalet"}
    assert 0 < first["score"] <= 1
    assert result["accuracy"] >= 0.75  # stroke glyphs, 4-way 1-shot, untrained body


def test_adapt_table_and_unlabelled_queries(capsys, artifact, task_dirs, tmp_path) -> None:  # noqa: ANN001
    support, query = task_dirs
    code, out, err = run_cli(capsys, "adapt", str(artifact), "--support", str(support), "--query", str(query))
    assert code == 0, err
    assert "accuracy:" in out and "label" in out.splitlines()[0]
    flat = tmp_path / "flat"
    flat.mkdir()
    for p in sorted(query.rglob("*.png"))[:3]:
        (flat / p.name).write_bytes(p.read_bytes())
    code, out, err = run_cli(
        capsys, "adapt", str(artifact), "--support", str(support), "--query", str(flat), "--json"
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["accuracy"] is None and len(result["predictions"]) == 3


def _copy_tree(src: Path, dst: Path) -> Path:
    for p in src.rglob("*"):
        if p.is_file():
            (dst / p.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
            (dst / p.relative_to(src)).write_bytes(p.read_bytes())
    return dst


@pytest.mark.parametrize("damage", ["empty_class", "unreadable", "one_class", "missing", "no_classes"])
def test_adapt_bad_input_is_one_clear_line(capsys, artifact, task_dirs, tmp_path, damage) -> None:  # noqa: ANN001
    support = _copy_tree(task_dirs[0], tmp_path / "support")
    if damage == "empty_class":
        (support / "he").mkdir()
        expect = "has no images"
    elif damage == "unreadable":
        (support / "alef" / "broken.png").write_bytes(b"\x89PNG not really")
        expect = "cannot read the image"
    elif damage == "one_class":
        for d in ("bet", "gimel", "dalet"):
            for p in (support / d).iterdir():
                p.unlink()
            (support / d).rmdir()
        expect = "at least two"
    elif damage == "missing":
        support = tmp_path / "nowhere"
        expect = "does not exist"
    else:
        support = tmp_path / "empty"
        support.mkdir()
        expect = "no class folders"
    code, out, err = run_cli(
        capsys, "adapt", str(artifact), "--support", str(support), "--query", str(task_dirs[1])
    )
    assert code == 2 and out == ""
    assert err.startswith("fewbit: error:") and expect in err and err.count("\n") == 1


def test_adapt_rejects_a_corrupt_artifact(capsys, artifact, task_dirs, tmp_path) -> None:  # noqa: ANN001
    bad = tmp_path / "bad.fewbit"
    data = bytearray(artifact.read_bytes())
    data[-10] ^= 0xFF
    bad.write_bytes(bytes(data))
    code, _, err = run_cli(
        capsys, "adapt", str(bad), "--support", str(task_dirs[0]), "--query", str(task_dirs[1])
    )
    assert code == 2 and "sha256 mismatch" in err and err.count("\n") == 1


def test_inspect_artifact_rows_and_totals(artifact) -> None:  # noqa: ANN001
    info = inspect_artifact(artifact)
    assert info["bytes"] == artifact.stat().st_size
    assert info["bytes"] == info["payload_bytes"] + info["manifest_bytes"] + 20
    assert {"bytes", "float32_bytes", "ratio", "layers"} <= set(info)
    convs = [r for r in info["layers"] if r["kind"] == "conv2d"]
    assert len(convs) == 4 and all(r["bits"] == 4 and r["act_bits"] == 8 for r in convs)
    assert info["ratio"] > 7


@pytest.mark.slow
def test_export_run_dir_then_adapt(capsys, tmp_path, task_dirs) -> None:  # noqa: ANN001
    run = tmp_path / "run"
    images = make_omniglot_folder(tmp_path / "data", root="bg", alphabets=3, characters=3, drawings=4, seed=1)
    code, _, err = run_cli(
        capsys,
        "train",
        "--dataset",
        f"omniglot:{images}",
        "--algorithm",
        "protonet",
        "--backbone",
        "mlp",
        "--ways",
        "3",
        "--shots",
        "1",
        "--queries",
        "1",
        "--meta-batch",
        "1",
        "--steps",
        "1",
        "--val-every",
        "0",
        "--compress",
        "quant:w4",
        "--out",
        str(run),
        "--device",
        "cpu",
        "--quiet",
    )
    assert code == 0, err
    code, out, err = run_cli(capsys, "export", str(run), "--out", str(tmp_path / "m.fewbit"), "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["bytes"] == (tmp_path / "m.fewbit").stat().st_size and info["bytes"] <= 60_000
    code, out, err = run_cli(
        capsys, "export", str(run), "--out", str(tmp_path / "m.onnx"), "--format", "onnx"
    )
    assert code == 0 and (tmp_path / "m.onnx").stat().st_size > 0, err
    code, out, err = run_cli(capsys, "inspect", str(tmp_path / "m.fewbit"), "--json")
    assert code == 0 and json.loads(out)["bytes"] == info["bytes"], err
    code, out, err = run_cli(
        capsys,
        "adapt",
        str(tmp_path / "m.fewbit"),
        "--support",
        str(task_dirs[0]),
        "--query",
        str(task_dirs[1]),
        "--json",
    )
    assert code == 0, err
    assert len(json.loads(out)["predictions"]) == 20


def test_export_of_a_missing_run_is_one_line(capsys, tmp_path) -> None:  # noqa: ANN001
    code, _, err = run_cli(capsys, "export", str(tmp_path / "nope"), "--out", str(tmp_path / "m.fewbit"))
    assert code == 2 and "not a run directory" in err and err.count("\n") == 1


def _train_small(capsys, run: Path) -> None:
    code, _, err = run_cli(capsys, "train", "--dataset", "glyphs", "--algorithm", "protonet", "--backbone", "mlp",
                           "--ways", "3", "--queries", "2", "--meta-batch", "1", "--steps", "2", "--val-every", "0",
                           "--seed", "5", "--out", str(run), "--device", "cpu", "--quiet")
    assert code == 0, err


def test_two_runs_with_equal_weights_export_equal_bytes_and_no_paths(capsys, tmp_path) -> None:  # noqa: ANN001
    """The artifact used to record the run directory as typed (a user's absolute path, shipped)."""
    import torch

    from fewbit.artifact.format import read_artifact
    from fewbit.train import load_run

    first, second = tmp_path / "alice" / "secret-project" / "run", tmp_path / "bob" / "run-2"
    _train_small(capsys, first)
    _train_small(capsys, second)
    a, b = load_run(first).model.state_dict(), load_run(second).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # same config and seed: equal weights
    for run, out in ((first, tmp_path / "a.fewbit"), (second, tmp_path / "b.fewbit")):
        code, _, err = run_cli(capsys, "export", str(run.resolve()), "--out", str(out))
        assert code == 0, err
    assert (tmp_path / "a.fewbit").read_bytes() == (tmp_path / "b.fewbit").read_bytes()
    manifest = json.dumps(read_artifact(tmp_path / "a.fewbit").manifest)
    assert str(tmp_path) not in manifest and "alice" not in manifest and "run_dir" not in manifest


def test_inspect_an_artifact_with_a_bias_only_layer(capsys, tmp_path) -> None:  # noqa: ANN001
    """A layer that stores a bias and no weight used to stop inspect with a KeyError."""
    from fewbit.artifact.format import encode_artifact
    from fewbit.deploy.torch_export import artifact_from_model

    manifest, tensors = artifact_from_model(compressed_conv4(None, ways=3, width=8), algorithm="maml")
    manifest["architecture"]["layers"].insert(0, {"op": "bias", "name": "shift", "weight": None, "bias": "shift.b"})
    tensors["shift.b"] = np.ones(1, np.float32)
    path = tmp_path / "bias.fewbit"
    path.write_bytes(encode_artifact(manifest, tensors))
    code, out, err = run_cli(capsys, "inspect", str(path), "--json")
    assert code == 0, err
    row = json.loads(out)["layers"][0]
    assert (row["name"], row["kind"], row["params"], row["bits"], row["bytes"]) == ("shift", "bias", 1, 32, 4)
    code, out, err = run_cli(capsys, "inspect", str(path))
    assert code == 0 and "shift" in out, err
    # a layer kind this runtime lacks: loading says so in one line
    code, _, err = run_cli(capsys, "adapt", str(path), "--support", str(tmp_path), "--query", str(tmp_path))
    assert code == 2 and "op 'bias', which this runtime lacks" in err and err.count("\n") == 1


def test_inspect_of_malformed_manifests_is_one_line(capsys, tmp_path) -> None:  # noqa: ANN001
    from fewbit.deploy.torch_export import artifact_from_model

    manifest, tensors = artifact_from_model(compressed_conv4(None, ways=3, width=8), algorithm="maml")
    for edit in (lambda m: m["architecture"].pop("input_shape"), lambda m: m.update(preprocessing={"image_size": 28,
                 "mean": float("nan")}), lambda m: m["architecture"]["layers"][0].update(input_quant=[1])):
        broken = json.loads(json.dumps(manifest))
        edit(broken)
        path = tmp_path / "m.fewbit"
        path.write_bytes(encode_allowing_nan(broken, tensors))
        code, out, err = run_cli(capsys, "inspect", str(path), "--json")
        assert code in (0, 2) and "Traceback" not in err and err.count("\n") <= 1, err
        if code == 0:
            json.loads(out, parse_constant=lambda c: pytest.fail(f"inspect printed {c}"))
