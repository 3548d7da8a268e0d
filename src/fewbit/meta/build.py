"""`build_algorithm`: the one way to make an Algorithm, bound to a model's compression when it has one."""

from __future__ import annotations

from torch import nn

from fewbit.compress import compressed_layers, project_params
from fewbit.errors import ConfigError
from fewbit.meta.base import OWNER, Algorithm, MetaConfig, Project, full_config
from fewbit.meta.registry import ALGORITHMS, algorithm_names


def build_algorithm(
    config: MetaConfig | str, *, model: nn.Module | None = None, project: Project | None = None
) -> Algorithm:
    """The algorithm `config` names (a bare name takes the default MetaConfig).

    With `model`, a compressed model's projection (`fewbit.compress.project_params`) is given to
    the algorithm, so that its inner loop keeps the fast weights on the grid, inside the masks
    and on the codebook, as the model ships. Training, loading, evaluation and `fewbit.adapt`
    all build their algorithm here.

        >>> algo = build_algorithm(MetaConfig(algorithm="maml", inner_steps=3), model=model)
        >>> logits = algo.predict(model, dict(model.named_parameters()), task)
    """
    if isinstance(config, str):
        if config not in ALGORITHMS:
            raise ConfigError(f"{OWNER}.algorithm: unknown algorithm {config!r}; choose one of "
                              f"{', '.join(algorithm_names())}")
        config = MetaConfig(algorithm=config)
    config = full_config(config)  # a plain MetaConfig takes its algorithm's defaults for the rest
    if project is None and model is not None:
        project = projection_for(model)
    return ALGORITHMS[config.algorithm](config, project=project)


def projection_for(model: nn.Module) -> Project | None:
    """`params -> project_params(model, params)` for a compressed model; None for a plain one."""
    import functools


    if not compressed_layers(model):
        return None
    return functools.partial(project_params, model)
