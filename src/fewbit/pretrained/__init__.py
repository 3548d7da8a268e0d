"""Trained, compressed models that ship inside the package: `<name>.fewbit` beside its card `<name>.json`.

    >>> import fewbit.runtime as rt
    >>> model = rt.load("omniglot-conv4-w4")          # a shipped model, by name
    >>> labels = rt.adapt(model, support_x, support_y).predict(query_x)

A card says what the model is and how it was made: data, licence, the exact training command(s)
and seed, steps and wall time, accuracy with its 95% interval on its test split, bytes, and
adaptation latency. `scripts/build_pretrained.py` rebuilds each artifact from its card's recipe.
Numpy and the standard library only (the runtime loads these without torch).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from fewbit.errors import FewbitError, shown

HERE = Path(__file__).resolve().parent
NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")


def model_names() -> tuple[str, ...]:
    """The shipped models (those with both an artifact and a card), sorted."""
    return tuple(sorted(p.stem for p in HERE.glob("*.fewbit") if (HERE / f"{p.stem}.json").is_file()))


def is_model_name(text: str) -> bool:
    """Whether `text` names a shipped model (not a path)."""
    return isinstance(text, str) and bool(NAME.match(text)) and text in model_names()


def model_path(name: str) -> Path:
    """The artifact of the shipped model `name`; FewbitError naming the models that exist."""
    if not is_model_name(name):
        shipped = ", ".join(model_names()) or "none"
        raise FewbitError(f"no shipped model '{shown(name)}'; fewbit ships: {shipped} (see `fewbit models`)")
    return HERE / f"{name}.fewbit"


def model_card(name: str) -> dict[str, Any]:
    """The card of the shipped model `name` (a JSON mapping)."""
    model_path(name)
    with open(HERE / f"{name}.json", encoding="utf-8") as f:
        card = json.load(f)
    if not isinstance(card, dict) or card.get("name") != name:
        raise FewbitError(f"the card of {name} is damaged; reinstall fewbit")
    return card


def model_cards() -> list[dict[str, Any]]:
    """Every shipped model's card."""
    return [model_card(n) for n in model_names()]


def describe_model(source: str) -> tuple[str, str | None]:
    """(a name for people, the data it was trained on or None) of an artifact given by a shipped
    model's name or path, or by any other path (named by its file name, its data unknown)."""
    path = Path(source)
    name = source if is_model_name(source) else path.stem
    if is_model_name(name) and (is_model_name(source) or path.resolve() == model_path(name).resolve()):
        return name, str(model_card(name)["data"]["name"])
    return path.name, None
