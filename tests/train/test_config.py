"""TrainConfig: defaults, YAML round trip, top-level MetaConfig fields, and one clear error per bad field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fewbit.errors import ConfigError
from fewbit.meta import MetaConfig
from fewbit.train import TrainConfig, load_config


def test_defaults_and_meta_fields_at_top_level():
    config = TrainConfig.from_dict({"dataset": "sinusoid", "algorithm": "maml", "inner_steps": 3, "inner_lr": 0.01})
    assert isinstance(config.meta, MetaConfig)
    assert (config.algorithm, config.meta.inner_steps, config.meta.inner_lr) == ("maml", 3, 0.01)
    assert config.resolved_backbone == "mlp" and config.regression


def test_yaml_round_trip(tmp_path):
    config = TrainConfig.from_dict({"dataset": "omniglot:x", "algorithm": "anil", "scope": "head", "ways": 3,
                                    "schedule": "cosine", "grad_clip": 5.0, "compress": "quant:w8"})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    again = load_config(path)
    assert again == config
    assert again.resolved_backbone == "conv4"
    assert load_config(path, ways=4, inner_lr=0.5).meta.inner_lr == 0.5


def test_replace_validates_again():
    config = TrainConfig.from_dict({"dataset": "sinusoid"})
    assert config.replace(steps=7, algorithm="fomaml").algorithm == "fomaml"
    assert config.replace(grad_clip=1.0).replace(grad_clip=None).grad_clip is None
    with pytest.raises(ConfigError, match="steps"):
        config.replace(steps=-1)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"dataset": ""}, "dataset"),
        ({"ways": 0}, "ways"),
        ({"shots": "2"}, "shots"),
        ({"meta_batch": 0}, "meta_batch"),
        ({"outer_lr": 0}, "outer_lr"),
        ({"outer_lr": float("nan")}, "outer_lr"),
        ({"grad_clip": -1.0}, "grad_clip"),
        ({"schedule": "linear"}, "schedule"),
        ({"rotations": "yes"}, "rotations"),
        ({"algorithm": "magic"}, "algorithm"),
        ({"inner_steps": -1}, "inner_steps"),
        ({"nonsense": 1}, "nonsense"),
        ({"meta": [1, 2]}, "meta"),
    ],
)
def test_bad_values_name_the_field(changes, field):
    with pytest.raises(ConfigError, match=field):
        TrainConfig.from_dict({"dataset": "sinusoid", **changes})


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_example_configs_load(path):
    config = load_config(path)
    assert config.steps > 0 and config.dataset


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"dataset": "sinusoid", "shots": 100_000_000}, "TrainConfig.ways"),  # one task's examples
        ({"dataset": "sinusoid", "meta_batch": 100_000_000}, "TrainConfig.meta_batch"),
        ({"ways": 20_000_000}, "TrainConfig.ways"),
        ({"batch_size": 10**9}, "TrainConfig.batch_size"),
        ({"image_size": 100_000}, "TrainConfig.data: InkOptions.image_size"),
        ({"seed": 2**64}, "TrainConfig.seed"),
        ({"seed": -(2**63) - 1}, "TrainConfig.seed"),
        ({"outer_lr": 10**400}, "TrainConfig.outer_lr"),  # an int no float holds
        ({"inner_lr": 10**400}, "MetaConfig.inner_lr"),
        ({"inner_lr": float("inf")}, "MetaConfig.inner_lr"),
        ({"inner_steps": 10**8}, "MetaConfig.inner_steps"),
        ({"eval_inner_steps": 10**8}, "MetaConfig.eval_inner_steps"),
        ({"algorithm": "finetune", "finetune_steps": 10**8}, "MetaConfig.finetune_steps"),
    ],
)
def test_work_is_bounded_by_the_config(changes, field):
    from fewbit.train import TrainConfig

    with pytest.raises(ConfigError, match=field):
        TrainConfig.from_dict({"dataset": "glyphs", **changes})


OLD_FLAT = {  # a config.yaml as fewbit wrote it before data options and algorithm settings were nested per kind
    "version": 1, "dataset": "glyphs", "backbone": "conv4", "ways": 5, "shots": 1, "queries": 15, "meta_batch": 16,
    "steps": 8000, "outer_lr": 0.002, "schedule": "cosine", "grad_clip": None, "seed": 0,
    "meta": {"version": 1, "algorithm": "finetune", "inner_steps": 1, "inner_lr": 0.4, "scope": "all",
             "first_order": False, "eval_inner_steps": None, "batched": True, "task_chunk": 0, "metasgd_init_lr": None,
             "reptile_steps": 5, "reptile_lr": None, "finetune_classifier": "linear", "finetune_steps": 100,
             "finetune_lr": 0.1, "cosine_scale": 10.0, "first_order_steps": 0, "multi_step_loss_steps": 0,
             "lslr": False},
    "batch_size": 128, "rotations": True, "image_size": 28, "channels": None, "invert": False, "normalize": True,
    "resize": "crop", "split_fractions": [0.6, 0.2], "split_seed": 0, "label_column": None, "augment": "ink",
    "within_group": False, "train_on": "train", "val_every": 0, "val_tasks": 100, "checkpoint_every": 500,
    "keep_checkpoints": 2, "device": "auto", "compress": "quant:w4a8:lsq", "init_from": None, "teacher": None,
    "teacher_weight": 0.5, "teacher_temperature": 4.0,
}


def test_an_old_flat_config_reads_as_the_nested_one() -> None:
    """Issue 25: every data option and algorithm setting sat at one level; now each nests with its kind."""
    from fewbit.data import InkOptions
    from fewbit.meta import FinetuneConfig
    from fewbit.train import TrainConfig

    config = TrainConfig.from_dict(OLD_FLAT)
    assert config.data == InkOptions(image_size=28) and type(config.meta) is FinetuneConfig
    nested = config.to_dict()
    assert "image_size" not in nested and nested["data"]["image_size"] == 28 and "reptile_steps" not in nested["meta"]
    assert TrainConfig.from_dict(nested) == config
    # an option the kind has not, at a value that mattered, is refused rather than dropped
    with pytest.raises(ConfigError, match="TrainConfig.data.label_column: glyphs data has no option label_column"):
        TrainConfig.from_dict({**OLD_FLAT, "label_column": "activity"})
    with pytest.raises(ConfigError, match="reptile_steps: a setting of reptile, not of finetune"):
        TrainConfig.from_dict({**OLD_FLAT, "meta": {**OLD_FLAT["meta"], "reptile_steps": 9}})


def test_nested_configs_are_validated_when_the_config_is_made() -> None:
    """Issue 25: `compress: int8` was saved and reloaded, and failed only when the model was built."""
    from fewbit.train import TrainConfig

    with pytest.raises(ConfigError, match="TrainConfig.compress: spec: unknown method 'int8'"):
        TrainConfig.from_dict({"dataset": "glyphs", "compress": "int8"})
    with pytest.raises(ConfigError, match="TrainConfig.data: InkOptions.image_size"):
        TrainConfig.from_dict({"dataset": "glyphs", "data": {"image_size": 3}})
    with pytest.raises(ConfigError, match="MetaConfig.inner_lr"):
        TrainConfig.from_dict({"dataset": "glyphs", "meta": {"algorithm": "maml", "inner_lr": -1}})
    assert TrainConfig.from_dict({"dataset": "glyphs", "compress": "prune:0.5,quant:w4a8"}).compress


def test_own_images_default_to_auto_steps_and_augmentation_and_built_in_data_do_not():
    """A folder of one's own photos trains with augmentation until validation stops rising (the
    defaults a newcomer needs); glyphs and Omniglot keep their fixed budgets; the config holds
    plain values, so a run's config.yaml says what it trained with."""
    from fewbit.train.config import AUTO_PATIENCE, AUTO_STEPS

    own = TrainConfig(dataset="folder:photos")
    assert (own.steps, own.patience, own.augment) == (AUTO_STEPS, AUTO_PATIENCE, "auto")
    assert (own.meta_batch, own.queries) == (4, 5)  # cheap steps; a class of 6 images is enough
    built_in = TrainConfig(dataset="glyphs")
    assert (built_in.steps, built_in.patience, built_in.augment) == (1000, 0, "none")
    assert (built_in.meta_batch, built_in.queries) == (16, 15)
    given = TrainConfig.from_dict({"dataset": "folder:photos", "steps": 300, "augment": "none"})
    assert (given.steps, given.patience, given.augment) == (300, 0, "none")
    auto = TrainConfig.from_dict({"dataset": "glyphs", "steps": "auto", "patience": 3})
    assert (auto.steps, auto.patience) == (AUTO_STEPS, 3)
    assert TrainConfig.from_dict(own.to_dict()) == own
    assert own.to_dict()["steps"] == AUTO_STEPS and own.to_dict()["augment"] == "auto"


@pytest.mark.parametrize(("data", "needle"), [
    ({"dataset": "folder:photos", "val_every": 0}, "TrainConfig.steps: stopping when validation"),
    ({"dataset": "glyphs", "patience": 2, "val_every": 0}, "TrainConfig.patience: stopping when validation"),
    ({"dataset": "glyphs", "steps": "many"}, "TrainConfig.steps: must be an integer >= 0 or auto"),
    ({"dataset": "glyphs", "patience": -1}, "TrainConfig.patience: must be an integer >= 0"),
])
def test_bad_steps_and_patience_are_one_line_naming_the_field(data, needle):
    with pytest.raises(ConfigError, match=needle):
        TrainConfig.from_dict(data)


def test_compress_none_trains_float_over_a_config_files_spec(tmp_path) -> None:
    """`fewbit train --config configs/omniglot.yaml --compress none`: the recipe without compression
    (an absent flag cannot turn a config file's spec off)."""
    from fewbit.train import TrainConfig, load_config

    assert TrainConfig.from_dict({"dataset": "glyphs", "compress": "none"}).compress is None
    assert TrainConfig.from_dict({"dataset": "glyphs", "compress": " None "}).compress is None
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("dataset: glyphs\ncompress: quant:w4a8:lsq\n")
    assert load_config(str(recipe)).compress == "quant:w4a8:lsq"
    assert load_config(str(recipe), compress="none").compress is None
    assert TrainConfig.from_dict({"dataset": "glyphs", "compress": "none"}).to_dict()["compress"] is None
