"""ANIL (Raghu et al. 2020): MAML whose inner loop adapts the head only."""

from __future__ import annotations

from fewbit.meta.maml import MAML, MAMLConfig
from fewbit.meta.registry import register_algorithm


@register_algorithm("anil", config=MAMLConfig)
class ANIL(MAML):
    """MAML with the `head` scope; the body's embedding is computed once per inner loop."""

    fixed_scope = "head"
    scopes = ("all", "head")  # a config may say all; ANIL adapts the head whatever it says
