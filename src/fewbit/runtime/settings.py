"""The adaptation settings of an artifact: its `adaptation` block, completed and checked.

Kept apart from `fewbit.runtime.adapt` so that loading an artifact can check the block the
runtime will follow (an unknown method, a scope the runtime cannot move) without importing the
adaptation code, which builds on the loaded model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fewbit.runtime import limits
from fewbit.runtime.views import check_views

if TYPE_CHECKING:
    from fewbit.runtime.model import RuntimeModel

PROTOTYPES, SGD = "prototypes", "sgd"
METHODS = (PROTOTYPES, SGD)
SCOPE_PARTS = ("head", "bias", "norm")  # a scope is "none" or parts joined by "+", e.g. "head+bias+norm"
HEAD_INITS = ("own", "zeros", "prototypes")
NORM_STATS = ("batch", "support")
CENTERS = ("none", "support")
METRICS = ("euclidean", "cosine")


def scope_parts(scope: str) -> set[str]:
    """The parts of a scope string ("none" is the empty set); ValueError for an unknown part."""
    if scope == "none":
        return set()
    parts = set(scope.split("+"))
    if not parts or not parts <= set(SCOPE_PARTS):
        raise ValueError(
            f"scope must be none or a +-joined subset of {', '.join(SCOPE_PARTS)}, got {scope!r}"
        )
    return parts


def settings_for(model: RuntimeModel, **overrides: Any) -> dict[str, Any]:
    """The artifact's adaptation block with `overrides` (None values ignored), checked."""
    base = {
        "method": SGD if model.ways else PROTOTYPES,  # an artifact without an adaptation block
        "embed": "joint",
        "scope": "head",
        "steps": 5,
        "lr": 0.1,
        "head_init": "own" if model.ways else "prototypes",
        "norm_stats": "batch",
        # how prototypes compare (the algorithm's choice): centre by the support mean, unit length,
        # and Euclidean distance or `scale` x cosine similarity
        "center": "none",
        "normalize": False,
        "metric": "euclidean",
        "scale": 1.0,
        "views": 1,  # test-time views (fewbit.runtime.views)
    }
    base.update({k: v for k, v in model.adaptation.items() if k in base})
    allowed = str(base["scope"])
    base.update({k: v for k, v in overrides.items() if v is not None})
    if base["method"] not in METHODS:
        raise ValueError(f"method must be {' or '.join(METHODS)}, got {base['method']!r}")
    parts = scope_parts(str(base["scope"]))
    if not parts <= scope_parts(allowed):
        raise ValueError(f"the artifact allows adapting {allowed!r} only, not {base['scope']!r}")
    if base["head_init"] not in HEAD_INITS:
        raise ValueError(f"head_init must be one of {', '.join(HEAD_INITS)}, got {base['head_init']!r}")
    if base["embed"] not in ("joint", "separate"):
        raise ValueError(f"embed must be joint or separate, got {base['embed']!r}")
    if base["norm_stats"] not in NORM_STATS:
        raise ValueError(f"norm_stats must be batch or support, got {base['norm_stats']!r}")
    if base["norm_stats"] == "support" and parts - {"head"}:
        raise ValueError("norm_stats=support adapts the head only; pass scope='head'")
    if base["center"] not in CENTERS or base["metric"] not in METRICS or not isinstance(base["normalize"], bool):
        raise ValueError(f"prototypes compare with center in {CENTERS}, metric in {METRICS} and normalize true or "
                         f"false, got {base['center']!r}, {base['metric']!r}, {base['normalize']!r}")
    base["views"] = check_views(base["views"], model.input_shape)
    base["scale"] = limits.check_lr(base["scale"], "scale")  # a finite number > 0, like a rate
    base["steps"] = limits.check_steps(base["steps"], "steps")
    base["lr"] = limits.check_lr(base["lr"], "lr")
    # learned per-parameter rates, unless a rate is given for this adaptation
    base["rates"] = model.rates if overrides.get("lr") is None else {}
    base["step_rates"] = model.step_rates if overrides.get("lr") is None else {}
    if parts - {"head"}:
        base["embed"] = "separate"  # a moving body cannot share one forward with the queries
    return base
