"""`fewbit adapt` and `fewbit export` (`fewbit.cli.deploy`) under load: queries are read a batch at a
time, the work is sized before any image is read, and a missing optional extra is one line."""

from __future__ import annotations

import json
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import fewbit.runtime as rt
from fewbit.cli import main
from fewbit.runtime.images import load_image_folder


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _images(folder: Path, count: int, *, size: int = 28, seed: int = 0, start: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(start, start + count):
        pixels = np.full((size, size), 255, np.uint8)
        r, c = rng.integers(2, size - 8, 2)
        pixels[r : r + 6, c : c + rng.integers(2, 6)] = 0  # a dark stroke on white paper
        Image.fromarray(pixels).save(folder / f"{i:04d}.png")


@pytest.fixture(scope="module")
def wide_input_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ProtoNet MLP on 64x64 images (16 KiB an image as float32): cheap to run, costly to hold."""
    from fewbit.artifact.format import encode_artifact
    from fewbit.deploy.torch_export import artifact_from_model
    from fewbit.models import mlp

    manifest, tensors = artifact_from_model(mlp(ways=2, in_features=64 * 64, hidden=(16,)), algorithm="protonet",
                                            preprocessing={"image_size": 64, "channels": 1})
    path = tmp_path_factory.mktemp("wide") / "wide.fewbit"
    path.write_bytes(encode_artifact(manifest, tensors))
    return path


def test_queries_are_read_a_batch_at_a_time(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                            wide_input_artifact: Path) -> None:
    """Every query was decoded to float32 before the first batch (thousands of images: MemoryError)."""
    for label in ("a", "b"):
        _images(tmp_path / "support" / label, 2, size=64, seed=ord(label))
    _images(tmp_path / "query", 600, size=64, seed=1)  # 9.4 MiB as float32, twice that while stacking
    argv = ["adapt", str(wide_input_artifact), "--support", str(tmp_path / "support"),
            "--query", str(tmp_path / "query"), "--batch", "20", "--json"]
    tracemalloc.start()
    try:
        code = main(argv)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    out, err = capsys.readouterr()
    assert code == 0, err
    assert len(json.loads(out)["predictions"]) == 600
    assert peak < 4 << 20, f"{peak / 2**20:.1f} MiB"


@pytest.mark.parametrize("norm_stats", ["batch", "support"])
def test_batched_queries_score_as_the_folder_read_whole_would(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                              norm_stats: str) -> None:
    """Streaming changes no prediction: with batch statistics a batch is the same `--batch` queries
    (with the support set) as before; with support statistics each query stands alone."""
    for label in ("a", "b", "c"):
        _images(tmp_path / "support" / label, 2, seed=ord(label))
        _images(tmp_path / "query" / label, 5, seed=ord(label) + 10)
    argv = ["adapt", "--model", "glyphs-conv4-w4", "--support", str(tmp_path / "support"), "--query",
            str(tmp_path / "query"), "--norm-stats", norm_stats, "--json"]
    code, out, err = run_cli(capsys, *argv, "--batch", "4", "--raw-out", str(tmp_path / "raw"))
    assert code == 0, err
    got = json.loads(out)["predictions"]
    model = rt.load("glyphs-conv4-w4")
    support = load_image_folder(tmp_path / "support", model.prep)
    query = load_image_folder(tmp_path / "query", model.prep)  # every query read at once, as before
    task = rt.adapt(model, support.x, support.labels, norm_stats=norm_stats)
    labels, scores = [], []
    for start in range(0, len(query.x), 4):  # batches that cross the class folders
        p, s = task.scores(query.x[start : start + 4])
        labels += [support.classes[i] for i in p]
        scores += [round(float(v), 6) for v in s]
    assert [g["file"] for g in got] == list(query.files)
    assert [g["label"] for g in got] == labels and [g["score"] for g in got] == scores
    from fewbit.deploy.c_export import input_to_pixels

    raw = (tmp_path / "raw" / "query.bin").read_bytes()
    assert raw == input_to_pixels(query.x, model.preprocessing).tobytes()
    assert (tmp_path / "raw" / "classes.txt").read_text(encoding="utf-8") == "a\nb\nc\n"  # label i: line i + 1
    if norm_stats == "support":  # each query on its own: the batch size cannot matter
        code, out, err = run_cli(capsys, *argv, "--batch", "1")
        assert code == 0 and [g["label"] for g in json.loads(out)["predictions"]] == labels


def test_the_work_is_sized_before_any_image_is_read(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Too many queries, or a support set beyond the adaptation limits: one line, no image opened."""
    from fewbit.runtime import images, limits

    for label in ("a", "b"):
        folder = tmp_path / "support" / label
        folder.mkdir(parents=True)
        for i in range(3):
            (folder / f"{i}.png").write_bytes(b"not an image: reading it would be an error of its own")
    (tmp_path / "query").mkdir()
    for i in range(10):
        (tmp_path / "query" / f"{i}.png").write_bytes(b"not an image either")
    argv = ["adapt", "--model", "glyphs-conv4-w4", "--support", str(tmp_path / "support"),
            "--query", str(tmp_path / "query")]
    monkeypatch.setattr(images, "MAX_FOLDER_FILES", 9, raising=False)
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == "" and err.count("\n") == 1 and "holds more than 9 files" in err, err
    monkeypatch.setattr(images, "MAX_FOLDER_FILES", 100)
    monkeypatch.setattr(limits, "MAX_BATCH_BYTES", 1 << 20)  # a few images of this model at most
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and err.count("\n") == 1 and "adapting on a support set of 6 images needs" in err, err
    monkeypatch.setattr(limits, "MAX_BATCH_BYTES", rt.load("glyphs-conv4-w4").cost.bytes_for(8))
    code, out, err = run_cli(capsys, *argv, "--batch", "10000")  # the support set fits; 10 queries at once do not
    assert code == 2 and "a query batch (--batch) of 10 images needs" in err, err


def test_export_to_onnx_without_the_extra_names_it(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """`--format onnx` without `onnx` installed was a `ModuleNotFoundError` traceback."""
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now fails as if it were not installed
    code, out, err = run_cli(capsys, "export", "--model", "glyphs-conv4-w4", "--format", "onnx",
                             "--out", str(tmp_path / "m.onnx"))
    assert code == 2 and out == "" and not (tmp_path / "m.onnx").exists()
    assert err == ("fewbit: error: ONNX export needs the onnx package, an optional extra: "
                   "pip install 'fewbit[onnx]'\n")
    from fewbit.artifact.format import read_artifact
    from fewbit.deploy.onnx_export import write_onnx
    from fewbit.errors import FewbitError
    from fewbit.pretrained import model_path

    artifact = read_artifact(model_path("glyphs-conv4-w4"))
    with pytest.raises(FewbitError, match=r"pip install 'fewbit\[onnx\]'"):
        write_onnx(tmp_path / "m.onnx", artifact.manifest, artifact.tensors)
