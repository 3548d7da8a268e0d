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
                                    "schedule": "cosine", "grad_clip": 5.0, "compress": "int8"})
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
