"""A user's own data, end to end: folder or table -> train -> eval -> export -> numpy runtime -> `fewbit adapt`."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import fewbit.runtime as rt
from fewbit.cli import main
from fewbit.data.sources import load_source
from fewbit.data.synthetic import write_image_folder, write_table
from fewbit.train import load_run

pytestmark = pytest.mark.usefixtures("fewbit_cache")


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    code = main([*args, "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def _episode_folders(source_root: Path, classes: list[str], out: Path, shots: int, queries: int) -> tuple[Path, Path]:
    """support/ and query/ folders (one folder per class) from the images of `classes`."""
    for c in classes:
        files = sorted((source_root / c).iterdir())
        for part, chosen in (("support", files[:shots]), ("query", files[shots : shots + queries])):
            (out / part / c).mkdir(parents=True, exist_ok=True)
            for f in chosen:
                shutil.copy(f, out / part / c / f.name)
    return out / "support", out / "query"


@pytest.mark.slow
def test_colour_folder_learns_and_ships(tmp_path: Path, capsys) -> None:
    root = write_image_folder(tmp_path / "photos", classes=40, images_per_class=10, size=36, formats=("png", "jpg"),
                              seed=1)
    common = ["--dataset", f"folder:{root}", "--image-size", "32", "--algorithm", "protonet", "--ways", "5",
              "--shots", "1", "--queries", "5", "--meta-batch", "2", "--val-every", "0", "--compress", "quant:w4a8",
              "--augment", "auto", "--device", "cpu", "--quiet"]
    _cli(capsys, "train", *common, "--steps", "0", "--out", str(tmp_path / "untrained"))
    _cli(capsys, "train", *common, "--steps", "200", "--out", str(tmp_path / "run"))
    before = _cli(capsys, "eval", str(tmp_path / "untrained"), "--tasks", "300", "--quiet")
    after = _cli(capsys, "eval", str(tmp_path / "run"), "--tasks", "300", "--quiet")
    assert after["accuracy"] >= 0.6 and after["accuracy"] >= before["accuracy"] + 0.08, (before, after)

    exported = _cli(capsys, "export", str(tmp_path / "run"), "--out", str(tmp_path / "m.fewbit"))
    assert exported["bytes"] < 70_000
    model = rt.load(tmp_path / "m.fewbit")
    assert model.input_shape == (3, 32, 32) and model.prep.channels == 3 and model.prep.resize == "crop"
    run = load_run(tmp_path / "run")
    assert tuple(model.prep.mean) == tuple(run.preprocessing.mean)  # the training statistics travel

    test = load_source(f"folder:{root}", image_size=32).split("test")
    classes = list(test.classes[:5])
    support, query = _episode_folders(root, classes, tmp_path / "task", shots=1, queries=5)
    result = _cli(capsys, "adapt", str(tmp_path / "m.fewbit"), "--support", str(support), "--query", str(query))
    assert result["accuracy"] >= 0.6 and len(result["predictions"]) == 25 and result["method"] == "prototypes"
    # the runtime embeds the folder's files as PyTorch embeds the training pipeline's tensors
    idx = np.arange(test.num_images)[:12]
    with torch.no_grad():
        ref = run.model(test.tensor(idx), embed=True).numpy()
    z = model.embed(test.tensor(idx).numpy())
    assert np.abs(z - ref).max() <= 0.05 * np.abs(ref).max()


@pytest.mark.slow
def test_table_learns_and_ships(tmp_path: Path, capsys) -> None:
    path = write_table(tmp_path / "t.csv", classes=20, rows_per_class=20, features=8)
    common = ["--dataset", f"csv:{path}", "--algorithm", "protonet", "--ways", "3", "--shots", "2", "--queries", "5",
              "--meta-batch", "4", "--val-every", "0", "--device", "cpu", "--quiet"]
    _cli(capsys, "train", *common, "--steps", "150", "--out", str(tmp_path / "run"))
    result = _cli(capsys, "eval", str(tmp_path / "run"), "--tasks", "300", "--quiet")
    assert result["accuracy"] >= 0.6  # chance: 1/3
    _cli(capsys, "export", str(tmp_path / "run"), "--out", str(tmp_path / "t.fewbit"))
    model = rt.load(tmp_path / "t.fewbit")
    assert model.prep.kind == "table" and model.input_shape == (8,)

    # Raw CSV rows through the runtime equal the training pipeline through PyTorch.
    run = load_run(tmp_path / "run")
    test = load_source(f"csv:{path}").split("test")
    rows = test.take(np.arange(test.num_images))
    with torch.no_grad():
        ref = run.model(test.tensor(np.arange(test.num_images)), embed=True).numpy()
    np.testing.assert_allclose(model.embed(model.prep.standardize(rows)), ref, rtol=1e-4, atol=1e-4)

    with open(path) as f:
        header, *body = list(csv.reader(f))
    labels = sorted({r[-1] for r in body if r[-1] in set(test.classes)})[:3]
    support = [header] + [r for lab in labels for r in [x for x in body if x[-1] == lab][:2]]
    query = [header] + [r for lab in labels for r in [x for x in body if x[-1] == lab][2:12]]
    for name, rows_ in (("support.csv", support), ("query.csv", query)):
        with open(tmp_path / name, "w", newline="") as f:
            csv.writer(f).writerows(rows_)
    out = _cli(capsys, "adapt", str(tmp_path / "t.fewbit"), "--support", str(tmp_path / "support.csv"),
               "--query", str(tmp_path / "query.csv"))
    assert out["accuracy"] >= 0.6 and len(out["predictions"]) == 30 and set(out["classes"]) == set(labels)
    code = main(["adapt", str(tmp_path / "t.fewbit"), "--support", str(tmp_path), "--query", str(tmp_path / "q")])
    assert code == 2 and "table model" in capsys.readouterr().err


def test_omniglot_read_as_a_folder_equals_omniglot(tmp_path: Path, make_omniglot_folder) -> None:
    root = make_omniglot_folder(tmp_path, root="images_background", alphabets=5, characters=3, drawings=6)
    a = load_source(f"omniglot:{root}")
    from fewbit.data import ImageOptions

    b = load_source(f"folder:{root}", options=ImageOptions(invert=True, normalize=False), progress=False)
    for split in ("train", "val", "test", "all"):
        da, db = a.split(split), b.split(split)
        assert da.classes == db.classes and da.class_alphabet == db.class_alphabet
        np.testing.assert_array_equal(da.images, db.images)
        np.testing.assert_array_equal(da.labels, db.labels)
        assert da.mean == db.mean and da.std == db.std
