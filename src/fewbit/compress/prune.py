"""Magnitude pruning: unstructured, N:M, and by output channel; one-shot or gradual.

The 0/1 mask lives in the buffer `cq_mask.mask` and multiplies the weight in every forward, so
the effective weight is exactly zero where pruned. The raw parameter is zeroed when its mask is
set and keeps exactly zero under training: its gradient there is exactly zero (it flows
through the mask multiply), and SGD, momentum, Adam and AdamW all leave a parameter with zero
value, zero gradient and zero optimizer state at zero. (An optimizer that already carried
momentum from before pruning would move it: call `apply_masks_(model)` after its steps.)

Gradual pruning follows the polynomial schedule of Zhu & Gupta (2017):
s_t = s_f + (s_0 - s_f) (1 - (t - t_0) / (t_1 - t_0))^3, updated every `frequency` steps by
`update_pruning(model, step)`; a weight once pruned stays pruned.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from fewbit.compress.layers import ChannelKeep, CompressedBatchNorm, CompressedMixin, WeightTransform, swap_in
from fewbit.compress.registry import check_choice, check_layers, register_method
from fewbit.errors import ConfigError
from fewbit.models.layers import BatchNorm

PATTERNS = ("unstructured", "nm", "channel")
SCHEDULES = ("oneshot", "polynomial")
NORMS = ("l1", "l2")
OWNER = "PruneConfig"


@dataclasses.dataclass(frozen=True, kw_only=True)
class PruneConfig:
    """Prune the smallest weights of each layer.

    `pattern`: `unstructured` (the `sparsity` fraction of smallest |w| per layer), `nm` (keep the
    `n` largest of every `m` consecutive weights along the input dimension; sparsity 1 - n/m),
    `channel` (drop the `sparsity` fraction of output channels with the smallest `norm`).
    `schedule`: `oneshot`, or `polynomial` from `initial_sparsity` at `begin_step` to `sparsity`
    at `end_step`, updated every `frequency` steps by `update_pruning`.
    """

    sparsity: float = 0.5
    pattern: str = "unstructured"
    n: int = 2
    m: int = 4
    norm: str = "l1"
    schedule: str = "oneshot"
    initial_sparsity: float = 0.0
    begin_step: int = 0
    end_step: int = 1000
    frequency: int = 100
    layers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_choice(OWNER, "pattern", self.pattern, PATTERNS)
        check_choice(OWNER, "schedule", self.schedule, SCHEDULES)
        check_choice(OWNER, "norm", self.norm, NORMS)
        for field in ("sparsity", "initial_sparsity"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ConfigError(f"{OWNER}.{field}: must be in [0, 1), got {value!r}")
        for field in ("n", "m", "begin_step", "end_step", "frequency"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{OWNER}.{field}: must be an integer >= 0, got {value!r}")
        if self.pattern == "nm" and not 1 <= self.n < self.m:
            raise ConfigError(f"{OWNER}.n: N:M needs 1 <= n < m, got {self.n}:{self.m}")
        if self.schedule == "polynomial":
            if self.pattern == "nm":
                raise ConfigError(f"{OWNER}.schedule: N:M pruning is one-shot only")
            if self.end_step <= self.begin_step:
                raise ConfigError(
                    f"{OWNER}.end_step: must exceed begin_step ({self.begin_step}), got {self.end_step}"
                )
            if self.frequency < 1:
                raise ConfigError(f"{OWNER}.frequency: must be >= 1, got {self.frequency}")
        check_layers(OWNER, self.layers)

    @property
    def target_sparsity(self) -> float:
        """The final fraction of pruned weights."""
        return 1.0 - self.n / self.m if self.pattern == "nm" else float(self.sparsity)

    def sparsity_at(self, step: int) -> float:
        """The scheduled sparsity at training step `step`."""
        if self.schedule == "oneshot":
            return self.target_sparsity
        t = min(max(step - self.begin_step, 0) / (self.end_step - self.begin_step), 1.0)
        return self.sparsity + (self.initial_sparsity - self.sparsity) * (1.0 - t) ** 3


@torch.no_grad()
def magnitude_mask(
    w: torch.Tensor,
    sparsity: float,
    pattern: str,
    n: int = 2,
    m: int = 4,
    norm: str = "l1",
    previous: torch.Tensor | None = None,
    name: str = "layer",
) -> torch.Tensor:
    """A 0/1 mask shaped like `w` pruning its smallest weights (already-pruned ones first)."""
    score = w.detach().abs().float()
    if previous is not None:
        score = torch.where(previous > 0, score, torch.full_like(score, -1.0))
    rows = score.reshape(score.shape[0], -1)  # [out, in*kh*kw]
    if pattern == "unstructured":
        pruned = round(sparsity * score.numel())
        flat = torch.ones(score.numel(), device=w.device)
        order = torch.sort(score.reshape(-1), stable=True).indices
        flat[order[:pruned]] = 0.0
        return flat.reshape(w.shape)
    if pattern == "nm":
        if rows.shape[1] % m:
            raise ConfigError(
                f"{OWNER}.m: layer {name} has {rows.shape[1]} inputs per output channel, "
                f"not divisible by m={m}"
            )
        groups = rows.reshape(rows.shape[0], -1, m)
        keep = groups.topk(n, dim=-1).indices
        mask = torch.zeros_like(groups).scatter_(-1, keep, 1.0)
        return mask.reshape(w.shape)
    channel_score = rows.clamp(min=0).sum(1) if norm == "l1" else rows.clamp(min=0).pow(2).sum(1)
    if previous is not None:
        dead = previous.reshape(previous.shape[0], -1).amax(1) == 0
        channel_score = torch.where(dead, torch.full_like(channel_score, -1.0), channel_score)
    pruned = min(round(sparsity * rows.shape[0]), rows.shape[0] - 1)
    keep_rows = torch.ones(rows.shape[0], device=w.device)
    keep_rows[torch.sort(channel_score, stable=True).indices[:pruned]] = 0.0
    return keep_rows.reshape(-1, *([1] * (w.dim() - 1))).expand_as(w).contiguous()


class Mask(WeightTransform):
    """A pruning mask (`cq_mask`): buffer `mask` shaped like the weight, 0 where pruned."""

    kind = "mask"

    def __init__(self, config: PruneConfig, mask: torch.Tensor) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("mask", mask.detach().clone().float())

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w * self.mask

    def forward_tasks(self, weights: torch.Tensor) -> torch.Tensor:
        return weights * self.mask  # the mask broadcasts over the leading task dimension

    def apply_bias(self, bias: torch.Tensor) -> torch.Tensor:
        """`bias` zeroed at dropped output channels (channel pattern only)."""
        if self.config.pattern != "channel":
            return bias
        return bias * self.mask.reshape(self.mask.shape[0], -1)[:, 0]

    def channel_keep(self) -> torch.Tensor:
        """`[out]` 1.0 for output channels with any kept weight."""
        return (self.mask.reshape(self.mask.shape[0], -1).amax(1) > 0).float()

    def extra_repr(self) -> str:
        sparsity = 1.0 - float(self.mask.mean()) if self.mask.numel() else 0.0
        return f"pattern={self.config.pattern}, sparsity={sparsity:.3f}"


def _set_mask(layer: Any, mask_module: Mask, mask: torch.Tensor, name: str, model: nn.Module) -> None:
    mask_module.mask.copy_(mask)
    with torch.no_grad():
        layer.weight.mul_(mask)
        if mask_module.config.pattern == "channel":
            keep = mask_module.channel_keep()
            if layer.bias is not None:
                layer.bias.mul_(keep)
            _mask_following_norm(model, name, keep)


def _mask_following_norm(model: nn.Module, name: str, keep: torch.Tensor) -> None:
    """Zero the scale/shift of a BatchNorm right after layer `name` in its Sequential (channel pruning)."""
    parent_name, _, leaf = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if not isinstance(parent, nn.Sequential):
        return
    names = [n for n, _ in parent.named_children()]
    i = names.index(leaf)
    if i + 1 >= len(names):
        return
    nxt_name = f"{parent_name}.{names[i + 1]}" if parent_name else names[i + 1]
    nxt = parent[i + 1]
    if type(nxt) is BatchNorm or isinstance(nxt, CompressedBatchNorm):
        bn = swap_in(model, nxt_name, nxt)
        if not hasattr(bn, "cq_channels"):
            bn.cq_channels = ChannelKeep(keep)
        else:
            bn.cq_channels.keep.copy_(keep)
        with torch.no_grad():
            bn.weight.mul_(keep)
            bn.bias.mul_(keep)


def update_pruning(model: nn.Module, step: int) -> dict[str, float]:
    """Advance gradual pruning to training `step`; returns each pruned layer's current sparsity."""
    out = {}
    for name, layer in model.named_modules():
        mask_module = getattr(layer, "cq_mask", None)
        if not isinstance(layer, CompressedMixin) or not isinstance(mask_module, Mask):
            continue
        config = mask_module.config
        due = (
            config.schedule == "polynomial"
            and config.begin_step <= step <= config.end_step
            and ((step - config.begin_step) % config.frequency == 0 or step == config.end_step)
        )
        if due:
            with torch.no_grad():
                seen = layer.compress_weight(layer.weight, upto="cq_mask")  # type: ignore[attr-defined]
            mask = magnitude_mask(
                seen,
                config.sparsity_at(step),
                config.pattern,
                config.n,
                config.m,
                config.norm,
                previous=mask_module.mask,
                name=name,
            )
            _set_mask(layer, mask_module, mask, name, model)
        out[name] = 1.0 - float(mask_module.mask.mean())
    return out


@torch.no_grad()
def apply_masks_(model: nn.Module) -> nn.Module:
    """Zero every raw weight (and channel-pruned bias / norm) where its mask is 0; returns `model`."""
    for _, layer in model.named_modules():
        mask_module = getattr(layer, "cq_mask", None)
        if isinstance(layer, CompressedMixin) and isinstance(mask_module, Mask):
            layer.weight.mul_(mask_module.mask)  # type: ignore[attr-defined]
            if layer.bias is not None:  # type: ignore[attr-defined]
                layer.bias.copy_(mask_module.apply_bias(layer.bias))  # type: ignore[attr-defined]
        if isinstance(layer, CompressedBatchNorm):
            layer.weight.mul_(layer.cq_channels.keep)
            layer.bias.mul_(layer.cq_channels.keep)
    return model


def _parse(args: list[str]) -> PruneConfig:
    """`0.5`, `N:M`, `nm:N:M`, `channel:0.5[:l1|l2]`, `unstructured:0.5`; option `poly` = gradual."""
    kwargs: dict[str, Any] = {}
    rest = list(args)
    if "poly" in rest:
        rest.remove("poly")
        kwargs["schedule"] = "polynomial"
    for norm in NORMS:
        if norm in rest:
            rest.remove(norm)
            kwargs["norm"] = norm
    if rest and rest[0] in PATTERNS:
        kwargs["pattern"] = rest.pop(0)
    try:
        numbers = [float(r) for r in rest]
    except ValueError:
        raise ConfigError(
            f"spec: cannot read prune arguments {':'.join(args)!r}; e.g. prune:0.5, prune:2:4"
        ) from None
    if len(numbers) == 2 and kwargs.get("pattern", "nm") == "nm":
        n, m = numbers
        if n != int(n) or m != int(m):
            raise ConfigError(f"spec: N:M must be integers, got {':'.join(rest)}")
        kwargs.update(pattern="nm", n=int(n), m=int(m))
    elif len(numbers) == 1:
        kwargs["sparsity"] = numbers[0]
    else:
        raise ConfigError(f"spec: cannot read prune arguments {':'.join(args)!r}; e.g. prune:0.5, prune:2:4")
    return PruneConfig(**kwargs)


@register_method("prune", PruneConfig, _parse)
def _install(layer: Any, config: PruneConfig, name: str, model: nn.Module) -> None:
    assert isinstance(layer, CompressedMixin)
    if hasattr(layer, "cq_mask"):
        raise ConfigError(f"spec: layer {name} is pruned twice; one prune item per layer")
    with torch.no_grad():
        seen = layer.compress_weight(layer.weight)  # type: ignore[attr-defined]
    start = config.sparsity_at(0) if config.schedule == "oneshot" else config.initial_sparsity
    mask = magnitude_mask(seen, start, config.pattern, config.n, config.m, config.norm, name=name)
    mask_module = Mask(config, mask).to(seen.device)
    layer.add_transform("cq_mask", mask_module)
    _set_mask(layer, mask_module, mask, name, model)
