"""ANIL (Raghu et al. 2020): MAML whose inner loop adapts the head only."""

from __future__ import annotations

from fewbit.meta.base import register_algorithm
from fewbit.meta.maml import MAML


@register_algorithm("anil")
class ANIL(MAML):
    """MAML with the `head` scope; the body's embedding is computed once per inner loop."""

    scope = "head"
