"""A final model trained on the training and validation classes (`train_on: train+val`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fewbit.cli import main
from fewbit.data.sources import load_source
from fewbit.data.synthetic import write_table
from fewbit.errors import ConfigError, DataError
from fewbit.train import TrainConfig, load_config, load_run, meta_train


def test_joined_split_holds_both_splits_without_copying_pixels(tiny_colour: str) -> None:
    source = load_source(tiny_colour)
    train, val = source.split("train"), source.split("val")
    joined = source.split("train+val")
    assert joined.classes == train.classes + val.classes
    assert joined.num_images == train.num_images + val.num_images
    assert joined.pixels is train.pixels  # rows of the shared store, not a copy
    for c, name in enumerate(joined.classes):
        part, k = (train, train.classes.index(name)) if name in train.classes else (val, val.classes.index(name))
        np.testing.assert_array_equal(joined.images[joined.labels == c], part.images[part.labels == k])
    assert not set(joined.classes) & set(source.split("test").classes)


def test_joined_split_of_a_table(tmp_path: Path) -> None:
    source = load_source(f"csv:{write_table(tmp_path / 't.csv', classes=10, rows_per_class=4, features=3)}")
    train, val = source.split("train"), source.split("val")
    joined = source.split("train+val")
    assert joined.num_classes == train.num_classes + val.num_classes
    np.testing.assert_array_equal(joined.tensor(np.flatnonzero(joined.labels >= train.num_classes)),
                                  val.tensor(np.arange(val.num_images)))


def test_train_on_needs_no_validation_and_a_known_value() -> None:
    with pytest.raises(ConfigError, match="train_on.*val_every"):
        TrainConfig.from_dict({"dataset": "glyphs", "train_on": "train+val"})
    with pytest.raises(ConfigError, match="train_on"):
        TrainConfig.from_dict({"dataset": "glyphs", "train_on": "everything", "val_every": 0})


def test_a_classifier_on_train_and_val_has_a_head_over_both(tiny_colour: str, tmp_path: Path, capsys) -> None:
    config = load_config(None, dataset=tiny_colour, image_size=16, backbone="conv4", algorithm="finetune",
                         batch_size=16, steps=2, val_every=0, device="cpu", train_on="train+val")
    run = meta_train(config, tmp_path / "tv", progress=False)
    source = load_source(tiny_colour, options=config.data, progress=False)
    assert run.model.head.out_features == source.split("train+val").num_classes == 12
    assert load_run(tmp_path / "tv").config.train_on == "train+val"
    assert main(["train", "--dataset", tiny_colour, "--train-on", "train+val", "--steps", "1",
                 "--out", str(tmp_path / "cli"), "--quiet"]) == 2
    assert "val_every" in capsys.readouterr().err


def test_only_a_run_that_validates_needs_a_val_split_for_its_task_shape(tmp_path: Path) -> None:
    spec = f"csv:{write_table(tmp_path / 't.csv', classes=10, rows_per_class=6, features=3)}"
    source = load_source(spec)
    ways = source.split("val").num_classes + 1  # more ways than the val split has classes
    assert source.split("train").num_classes >= ways
    config = dict(dataset=spec, backbone="mlp", algorithm="protonet", ways=ways, shots=1, queries=1, meta_batch=2,
                  steps=2, device="cpu")
    with pytest.raises(DataError, match=r"\[val\] has"):
        meta_train(load_config(None, val_every=1, **config), tmp_path / "validates", progress=False)
    assert not list((tmp_path / "validates").rglob("*.safetensors"))  # refused before any step
    run = meta_train(load_config(None, val_every=0, **config), tmp_path / "never", progress=False)
    assert run.step == 2
