"""Recipes: the training set-ups fewbit ships, as YAML files beside this module.

A recipe is data, not code: `demo.yaml` is the demo's sweep (its grid and base training
settings). `load_recipe(name)` reads one as a mapping for the config class that takes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fewbit.config import load_yaml
from fewbit.errors import ConfigError

RECIPES = Path(__file__).resolve().parent


def recipe_names() -> tuple[str, ...]:
    """The recipes shipped with fewbit."""
    return tuple(sorted(p.stem for p in RECIPES.glob("*.yaml")))


def load_recipe(name: str) -> dict[str, Any]:
    """The recipe `name` as a mapping; ConfigError naming the recipes that exist."""
    path = RECIPES / f"{name}.yaml"
    if name not in recipe_names():
        raise ConfigError(f"no recipe {name!r}; fewbit ships {', '.join(recipe_names())}")
    return load_yaml(path)
