"""What the search chooses: one option (weight bits, sparsity, pattern) per compressible layer, and
the ordinary per-layer compression spec string a plan is written as.

A plan becomes items restricted to layers by name (`fewbit.compress.spec`'s `@glob|glob`): pruning
items first, then quantization, so each layer's quantizer calibrates on its pruned weight (the order
`prune:0.5,quant:w4a8` has for a whole model). Layers sharing an option share an item::

    prune:0.5@features.1.0,quant:w4a8@features.0.0|features.3.0,quant:w2a8@features.1.0|features.2.0
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

from fewbit.errors import ConfigError

PATTERNS = ("unstructured", "channel")
BITS_CHOICES = (1, 2, 3, 4, 8)


@dataclasses.dataclass(frozen=True, order=True)
class LayerOption:
    """One layer's compression: `bits` weight bits (1..8), `sparsity` in [0, 1) of `pattern`
    (unstructured magnitude pruning, or whole output channels by L1 norm)."""

    bits: int
    sparsity: float = 0.0
    pattern: str = "unstructured"

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not 1 <= self.bits <= 8:
            raise ConfigError(f"LayerOption.bits: must be an integer in 1..8, got {self.bits!r}")
        if isinstance(self.sparsity, bool) or not isinstance(self.sparsity, (int, float)) \
                or not 0.0 <= self.sparsity < 1.0:
            raise ConfigError(f"LayerOption.sparsity: must be in [0, 1), got {self.sparsity!r}")
        if self.pattern not in PATTERNS:
            raise ConfigError(f"LayerOption.pattern: must be one of {', '.join(PATTERNS)}, got {self.pattern!r}")
        object.__setattr__(self, "sparsity", float(self.sparsity))

    @property
    def label(self) -> str:
        """Short and stable: `w4`, `w2 s50%`, `w4 c25%` (c: channels)."""
        if not self.sparsity:
            return f"w{self.bits}"
        kind = "c" if self.pattern == "channel" else "s"
        return f"w{self.bits} {kind}{round(100 * self.sparsity):d}%"

    def prune_token(self) -> str | None:
        """The prune item's body (`prune:0.5`, `prune:channel:0.25`), or None without sparsity."""
        if not self.sparsity:
            return None
        return f"prune:channel:{self.sparsity:g}" if self.pattern == "channel" else f"prune:{self.sparsity:g}"

    def quant_token(self, act_bits: int | None, lsq: bool) -> str:
        """The quant item's body (`quant:w4a8`, `quant:w2a8:lsq`)."""
        return f"quant:w{self.bits}" + (f"a{act_bits}" if act_bits else "") + (":lsq" if lsq else "")


Plan = Mapping[str, LayerOption]  # layer name -> its option, in the model's layer order


def option_grid(bits: Iterable[int], sparsity: Iterable[float], patterns: Iterable[str]) -> list[LayerOption]:
    """Every (bits, sparsity, pattern) option once, dense ones once whatever the patterns."""
    out: dict[LayerOption, None] = {}
    for b in bits:
        for s in sparsity:
            for p in patterns:
                out.setdefault(LayerOption(b, s, p if s else "unstructured"))
    return list(out)


def plan_spec(plan: Plan, *, act_bits: int | None = 8, lsq: bool = False) -> str:
    """The compression spec string of `plan` (see the module docstring); `fewbit train --compress` takes it."""
    if not plan:
        raise ConfigError("plan: no layer to compress")
    for name in plan:
        if not name or any(ch in name for ch in ",@|:*?[]") or name != name.strip():
            raise ConfigError(f"plan: layer name {name!r} cannot be written in a spec")
    prune: dict[str, list[str]] = {}
    quant: dict[str, list[str]] = {}
    for name, option in plan.items():
        token = option.prune_token()
        if token is not None:
            prune.setdefault(token, []).append(name)
        quant.setdefault(option.quant_token(act_bits, lsq), []).append(name)
    items = [f"{token}@{'|'.join(names)}" for token, names in (*prune.items(), *quant.items())]
    return ",".join(items)


def uniform_plan(layers: Sequence[str], option: LayerOption) -> dict[str, LayerOption]:
    """Every layer at `option`."""
    return {name: option for name in layers}
