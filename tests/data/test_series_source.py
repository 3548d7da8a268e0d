"""`series:PATH` and `signals` as data sources: splits, options, info, augmentation, and the whole path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fewbit.cli import main
from fewbit.data import SeriesOptions, load_source
from fewbit.data.episodes import EpisodeSampler
from fewbit.errors import ConfigError, DataError


def write_series_folder(root: Path, *, classes: int = 9, per_class: int = 4, channels: int = 2,
                        lengths: tuple[int, ...] = (40, 52, 64), split: bool = False, seed: int = 0) -> Path:
    """Class folders of .csv and .npy samples: class c is a sine of frequency c+1 on each channel, plus noise."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        part = ("train", "train", "train", "train", "train", "val", "val", "test", "test")[c % 9] if split else ""
        folder = root / part / f"class{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            t = np.linspace(0, 1, lengths[i % len(lengths)])
            x = np.stack([np.sin(2 * np.pi * (c + 1) * t + k) for k in range(channels)], axis=1)  # [T, C]
            x = x + 0.1 * rng.standard_normal(x.shape)
            if i % 2:
                np.save(folder / f"s{i}.npy", x.astype(np.float32))
            else:
                np.savetxt(folder / f"s{i}.csv", x, delimiter=",", header=",".join(f"ch{k}" for k in range(channels)),
                           comments="")
    return root


def test_a_folder_of_series_reads_splits_and_prepares_one_array(tmp_path: Path) -> None:
    root = write_series_folder(tmp_path / "s", split=True)
    source = load_source(f"series:{root}", length=32)
    assert source.kind == "series" and source.preprocessing.input_shape == (2, 1, 32)
    train, val, test = (source.split(s) for s in ("train", "val", "test"))
    assert (train.num_classes, val.num_classes, test.num_classes) == (5, 2, 2)
    assert not set(train.classes) & set(test.classes)
    x = train.tensor(np.arange(3))
    assert x.shape == (3, 2, 1, 32) and x.dtype == torch.float32
    # per-series z-score: each channel of each drawn series has mean 0 and std 1
    np.testing.assert_allclose(x.mean(-1).numpy(), 0, atol=1e-5)
    np.testing.assert_allclose(x.std(-1, unbiased=False).numpy(), 1, atol=1e-4)
    assert source.split("train+val").num_classes == 7


def test_global_norm_stores_the_training_statistics(tmp_path: Path) -> None:
    root = write_series_folder(tmp_path / "s")
    source = load_source(f"series:{root}", length=32, series_norm="global")
    pre = source.preprocessing
    assert pre.norm == "global" and len(pre.mean) == 2 and all(s > 0 for s in pre.std)
    train = source.split("train")
    x = train.tensor(np.arange(train.num_images)).numpy()
    np.testing.assert_allclose(x.mean(axis=(0, 2, 3)), 0, atol=1e-4)  # the training split is standardised
    assert source.split("test").preprocessing == pre  # every split shares the training statistics


def test_series_options_are_validated_and_belong_to_series(tmp_path: Path) -> None:
    for bad, field in (({"length": 0}, "length"), ({"length_rule": "zoom"}, "length_rule"),
                       ({"series_norm": "minmax"}, "series_norm"), ({"channels": 0}, "channels")):
        with pytest.raises(ConfigError, match=f"SeriesOptions.{field}"):
            SeriesOptions(**bad)
    root = write_series_folder(tmp_path / "s")
    with pytest.raises(ConfigError, match="series data has no option image_size"):
        load_source(f"series:{root}", image_size=28)
    with pytest.raises(DataError, match="have 2 channel"):
        load_source(f"series:{root}", channels=3)


def test_data_info_and_show_on_series(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_series_folder(tmp_path / "s")
    assert main(["data", "info", f"series:{root}", "--length", "48", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert {k: info[k] for k in ("classes", "series", "channels", "length_min", "length_max", "length")} == {
        "classes": 9, "series": 36, "channels": 2, "length_min": 40, "length_max": 64, "length": 48}
    assert main(["data", "show", f"series:{root}", "--split", "all", "--ways", "3", "--out",
                 str(tmp_path / "t.png")]) == 0
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    assert main(["data", "info", f"series:{root}", "--image-size", "28"]) == 2
    assert "series data has no option image_size" in capsys.readouterr().err
    # one --channels flag for every kind: a series' count is any 1..64, an image's 1 or 3
    assert main(["data", "info", f"series:{root}", "--channels", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["channels"] == 2
    assert main(["data", "info", "signals", "--channels", "6", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["channels"] == 6
    assert main(["data", "info", f"folder:{tmp_path}", "--channels", "6"]) == 2
    assert "channels" in capsys.readouterr().err


def test_signals_are_split_by_family_and_augmented_as_series() -> None:
    source = load_source("signals", length=64)
    train, test = source.split("train"), source.split("test")
    assert not set(train.alphabets) & set(test.alphabets) and train.input_shape == (3, 1, 64)
    assert train.augment_recipe("auto") == "series" == train.augment_recipe("series")
    with pytest.raises(ValueError, match="photo augments images"):
        train.augment_recipe("photo")
    assert not train.rotatable
    draws = []
    for _ in range(2):
        sampler = EpisodeSampler(train, ways=5, shots=1, queries=2, augment="auto",
                                 generator=torch.Generator().manual_seed(3))
        draws.append(sampler.sample(2))
    torch.testing.assert_close(draws[0].support_x, draws[1].support_x)  # seeded: bit-identical
    plain = EpisodeSampler(train, ways=5, shots=1, queries=2, generator=torch.Generator().manual_seed(3)).sample(2)
    assert not torch.equal(plain.support_x, draws[0].support_x)  # the augmentation moved the series
    assert torch.isfinite(draws[0].support_x).all()
    with pytest.raises(ConfigError, match="rotations"):
        EpisodeSampler(train, ways=5, shots=1, queries=2, rotations=True)
