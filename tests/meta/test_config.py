"""MetaConfig validation and the algorithm registry."""

from __future__ import annotations

import pytest

from fewbit.config import from_dict, to_dict
from fewbit.errors import ConfigError
from fewbit.meta import ALGORITHMS, Algorithm, MetaConfig, build_algorithm


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"algorithm": "mamll"}, "algorithm"),
        ({"inner_steps": -1}, "inner_steps"),
        ({"inner_steps": 1.5}, "inner_steps"),
        ({"inner_lr": 0}, "inner_lr"),
        ({"scope": "everything"}, "scope"),
        ({"algorithm": "anil", "scope": "bias_norm"}, "scope"),
        ({"finetune_classifier": "svm"}, "finetune_classifier"),
        ({"first_order": "yes"}, "first_order"),
        ({"eval_inner_steps": -2}, "eval_inner_steps"),
    ],
)
def test_bad_config_is_one_line_naming_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        MetaConfig(**kwargs)
    message = str(info.value)
    assert "\n" not in message and f"MetaConfig.{field}" in message


def test_unknown_algorithm_lists_the_choices() -> None:
    with pytest.raises(ConfigError, match="choose one of maml, fomaml, metasgd, anil, reptile, protonet, finetune"):
        MetaConfig(algorithm="snail")


def test_every_name_builds_and_round_trips() -> None:
    for name in ALGORITHMS:
        config = MetaConfig(algorithm=name, inner_steps=2)
        algo = build_algorithm(config)
        assert isinstance(algo, Algorithm) and algo.name == name and algo.config is config
        assert from_dict(MetaConfig, to_dict(config)) == config
    assert build_algorithm("protonet").episodic and not build_algorithm("finetune").episodic


def test_config_is_frozen() -> None:
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        MetaConfig().inner_steps = 3  # type: ignore[misc]
