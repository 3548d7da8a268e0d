"""MetaConfig validation and the algorithm registry."""

from __future__ import annotations

import pytest

from fewbit.config import to_dict
from fewbit.errors import ConfigError
from fewbit.meta import ALGORITHMS, Algorithm, MetaConfig, build_algorithm, config_type, meta_config


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"algorithm": "mamll"}, "algorithm"),
        ({"inner_steps": -1}, "inner_steps"),
        ({"inner_steps": 1.5}, "inner_steps"),
        ({"inner_lr": 0}, "inner_lr"),
        ({"scope": "everything"}, "scope"),
        ({"algorithm": "anil", "scope": "bias_norm"}, "scope"),
        ({"algorithm": "finetune", "finetune_classifier": "svm"}, "finetune_classifier"),
        ({"first_order": "yes"}, "first_order"),
        ({"eval_inner_steps": -2}, "eval_inner_steps"),
    ],
)
def test_bad_config_is_one_line_naming_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        meta_config(kwargs.pop("algorithm", "protonet"), **kwargs)
    message = str(info.value)
    assert "\n" not in message and f"MetaConfig.{field}" in message


def test_unknown_algorithm_lists_the_choices() -> None:
    with pytest.raises(ConfigError, match="choose one of maml, fomaml, metasgd, anil, reptile, protonet, finetune"):
        MetaConfig(algorithm="snail")


def test_every_name_builds_and_round_trips() -> None:
    for name in ALGORITHMS:
        config = meta_config(name, inner_steps=2)
        algo = build_algorithm(config)
        assert isinstance(algo, Algorithm) and algo.name == name and algo.config is config
        assert type(config) is config_type(name) and MetaConfig.from_dict(to_dict(config)) == config
        plain = build_algorithm(MetaConfig(algorithm=name, inner_steps=2))  # the shared settings alone
        assert plain.config == config  # take the algorithm's defaults for its own
    assert build_algorithm("protonet").episodic and not build_algorithm("finetune").episodic


def test_config_is_frozen() -> None:
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        MetaConfig().inner_steps = 3  # type: ignore[misc]


def test_each_algorithm_owns_its_settings_and_old_flat_configs_still_read() -> None:
    """Issue 25: one config class per algorithm; the old MetaConfig that held every algorithm's fields."""
    from fewbit.meta import FinetuneConfig, MAMLConfig, MetaSGDConfig, ReptileConfig

    assert type(meta_config("anil")) is MAMLConfig and type(meta_config("reptile")) is ReptileConfig
    assert type(meta_config("metasgd")) is MetaSGDConfig and type(meta_config("simpleshot")) is FinetuneConfig
    assert "lslr" not in meta_config("protonet").to_dict() and "lslr" in meta_config("maml").to_dict()
    with pytest.raises(ConfigError, match="MetaConfig: protonet has no setting lslr"):
        meta_config("protonet").replace(lslr=True)
    with pytest.raises(ConfigError, match="unknown field"):
        meta_config("protonet", reptile_steps=3)
    # an old flat form (every algorithm's settings at their defaults) reads as the algorithm's own
    flat = {"algorithm": "maml", "inner_steps": 3, "metasgd_init_lr": None, "reptile_steps": 5, "reptile_lr": None,
            "finetune_classifier": "linear", "finetune_steps": 100, "finetune_lr": 0.1, "cosine_scale": 10.0,
            "first_order_steps": 0, "multi_step_loss_steps": 0, "lslr": True}
    assert MetaConfig.from_dict(flat) == meta_config("maml", inner_steps=3, lslr=True)
    with pytest.raises(ConfigError, match="finetune_steps: a setting of finetune, simpleshot, not of maml"):
        MetaConfig.from_dict({**flat, "finetune_steps": 7})
    # a finetune run tested as metabaseline keeps what the two share
    tested = meta_config("finetune", finetune_classifier="cosine", cosine_scale=12.0).replace(algorithm="metabaseline")
    assert tested.cosine_scale == 12.0 and tested.algorithm == "metabaseline"
