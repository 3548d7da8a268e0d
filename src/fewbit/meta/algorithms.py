"""Imports every built-in algorithm so that its `register_algorithm` runs."""

from __future__ import annotations

from fewbit.meta import anil, finetune, maml, metasgd, protonet, reptile

__all__ = ["anil", "finetune", "maml", "metasgd", "protonet", "reptile"]
