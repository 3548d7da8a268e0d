"""Uniform quantization of weights and activations, 1 to 8 bits, with a straight-through estimator.

Grids. Symmetric b >= 2 bits: integers q in [-2^(b-1), 2^(b-1)-1], value q * scale, with
scale = clip / (2^(b-1)-1) so that the clipping bound is exactly representable. Symmetric
1 bit: value sign(w) * scale (sign(0) = +1) with scale = mean |w| (the L2-optimal scale of a
sign code; the observer is not used). Asymmetric: q in [0, 2^b-1], value (q - zero_point) *
scale, zero_point an integer so that 0 is exactly representable.

Scales. Without LSQ the weight scale is re-derived by the observer from the weight the layer
sees on every forward (detached), so fast weights of an inner loop get a grid of their own and
`convert` reproduces the forward exactly. With `learnable_step` (LSQ, Esser et al. 2020) the
step is a parameter `cq_weight.step` initialised by the observer and trained with LSQ's
gradient scaling. Activation scales are static once `calibrate` has run (min-max, percentile
or MSE over the calibration batches); before that each batch is quantized with its own
min-max range (dynamic). Activations are quantized asymmetrically per tensor.

Forward values are exact grid values: the STE is written `q.detach() + (x - x.detach())`,
which has the value of `q` bit for bit and the gradient of the identity.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import torch
from torch import nn

from fewbit.compress.layers import CompressedMixin, WeightTransform
from fewbit.compress.registry import check_bits, check_choice, check_layers, register_method
from fewbit.errors import ConfigError

OBSERVERS = ("minmax", "percentile", "mse")
GRANULARITIES = ("per_tensor", "per_channel")
OWNER = "QuantConfig"
_EPS = 1e-8


@dataclasses.dataclass(frozen=True, kw_only=True)
class QuantConfig:
    """Uniform fake quantization of weights (`bits_weight`) and input activations (`bits_act`).

    `None` for a bit width leaves that side in float32. `granularity` and `symmetric` apply to
    weights; `observer` picks the clipping range of weights and (at calibration) activations;
    `percentile` is the observer's percentile; `learnable_step` trains the steps (LSQ);
    `layers` restricts the item to layer names matching these globs.
    """

    bits_weight: int | None = 8
    bits_act: int | None = None
    symmetric: bool = True
    granularity: str = "per_channel"
    observer: str = "minmax"
    percentile: float = 99.9
    learnable_step: bool = False
    layers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_bits(OWNER, "bits_weight", self.bits_weight, allow_none=True)
        check_bits(OWNER, "bits_act", self.bits_act, allow_none=True)
        if self.bits_weight is None and self.bits_act is None:
            raise ConfigError(f"{OWNER}.bits_weight: give bits_weight and/or bits_act")
        check_choice(OWNER, "granularity", self.granularity, GRANULARITIES)
        check_choice(OWNER, "observer", self.observer, OBSERVERS)
        if not isinstance(self.symmetric, bool):
            raise ConfigError(f"{OWNER}.symmetric: must be true or false, got {self.symmetric!r}")
        if not isinstance(self.learnable_step, bool):
            raise ConfigError(f"{OWNER}.learnable_step: must be true or false, got {self.learnable_step!r}")
        if (
            isinstance(self.percentile, bool)
            or not isinstance(self.percentile, (int, float))
            or not (50.0 < self.percentile <= 100.0)
        ):
            raise ConfigError(f"{OWNER}.percentile: must be in (50, 100], got {self.percentile!r}")
        check_layers(OWNER, self.layers)


def qrange(bits: int, symmetric: bool) -> tuple[int, int]:
    """The integer range `(qmin, qmax)` of a `bits`-bit grid (1-bit symmetric: (-1, 1), no zero)."""
    if symmetric:
        return (-1, 1) if bits == 1 else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    return 0, 2**bits - 1


def _ste(q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Value of `q` (exactly), gradient of the identity w.r.t. `x`."""
    return q.detach() + (x - x.detach())


def _channel_view(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-channel `[C]` (or `[1]`) tensor shaped to broadcast against `like` along dim 0."""
    return t.reshape(-1, *([1] * (like.dim() - 1)))


def _rows(w: torch.Tensor, per_channel: bool) -> torch.Tensor:
    """`w` as `[C, n]` (per channel) or `[1, numel]`."""
    return w.reshape(w.shape[0], -1) if per_channel and w.dim() > 1 else w.reshape(1, -1)


def observe_range(
    rows: torch.Tensor, bits: int, symmetric: bool, observer: str, percentile: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipping range `(lo, hi)` per row of `rows` `[C, n]` (lo = -hi when symmetric), detached."""
    rows = rows.detach()
    if symmetric:
        mag = rows.abs()
        if observer == "percentile":
            hi = _percentile(mag, percentile)
        elif observer == "mse":
            hi = _mse_clip(rows, mag.amax(1), bits, symmetric=True)
        else:
            hi = mag.amax(1)
        return -hi, hi
    lo, hi = rows.amin(1).clamp(max=0.0), rows.amax(1).clamp(min=0.0)
    if observer == "percentile":
        lo = _percentile(rows, 100.0 - percentile).clamp(max=0.0)
        hi = _percentile(rows, percentile).clamp(min=0.0)
    elif observer == "mse":
        alpha = _mse_alpha(rows, lo, hi, bits, symmetric=False)
        lo, hi = lo * alpha, hi * alpha
    return lo, hi


def _percentile(rows: torch.Tensor, p: float) -> torch.Tensor:
    """The `p`-th percentile of each row (nearest rank, vmap-friendly)."""
    n = rows.shape[1]
    k = min(n - 1, max(0, math.ceil(p / 100.0 * n) - 1))
    return rows.sort(dim=1).values[:, k]


_MSE_GRID = torch.linspace(0.3, 1.0, 15)


def _mse_clip(rows: torch.Tensor, amax: torch.Tensor, bits: int, symmetric: bool) -> torch.Tensor:
    return amax * _mse_alpha(rows, -amax, amax, bits, symmetric)


def _mse_alpha(
    rows: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bits: int, symmetric: bool
) -> torch.Tensor:
    """The shrink factor of `(lo, hi)` (from a fixed grid) minimising each row's quantization MSE."""
    grid = _MSE_GRID.to(rows)
    errors = []
    for a in grid:
        scale, zp = scale_zero_point(lo * a, hi * a, bits, symmetric)
        q = dequantize(
            quantize_codes(rows, scale[:, None], zp[:, None], bits, symmetric),
            scale[:, None],
            zp[:, None],
            bits,
            symmetric,
        )
        errors.append((q - rows).pow(2).mean(1))
    best = torch.stack(errors, 1).argmin(1)  # [C]
    return grid[best]


def scale_zero_point(
    lo: torch.Tensor, hi: torch.Tensor, bits: int, symmetric: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(scale, zero_point)` of a clipping range; zero_point is 0 when symmetric."""
    qmin, qmax = qrange(bits, symmetric)
    if symmetric:
        scale = hi.clamp(min=_EPS) / (1 if bits == 1 else qmax)
        return scale, torch.zeros_like(scale)
    scale = ((hi - lo) / (qmax - qmin)).clamp(min=_EPS)
    zero_point = torch.clamp(torch.round(-lo / scale), qmin, qmax)
    return scale, zero_point


def quantize_codes(
    x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, bits: int, symmetric: bool
) -> torch.Tensor:
    """The signed integer grid index q of every element (float tensor holding integers)."""
    qmin, qmax = qrange(bits, symmetric)
    if symmetric and bits == 1:
        return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))
    return torch.clamp(torch.round(x / scale) + zero_point, qmin, qmax)


def dequantize(
    q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, bits: int, symmetric: bool
) -> torch.Tensor:
    """Grid values of integer indices `q` (the same arithmetic the packed containers use)."""
    if symmetric:
        return q * scale
    return (q - zero_point) * scale


def weight_qparams(
    w: torch.Tensor, bits: int, symmetric: bool, per_channel: bool, observer: str, percentile: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Observer `(scale, zero_point)` of a weight, each `[C]` (per channel) or `[1]`, detached."""
    rows = _rows(w.detach(), per_channel)
    if symmetric and bits == 1:
        scale = rows.abs().mean(1).clamp(min=_EPS)
        return scale, torch.zeros_like(scale)
    lo, hi = observe_range(rows, bits, symmetric, observer, percentile)
    return scale_zero_point(lo, hi, bits, symmetric)


class WeightQuant(WeightTransform):
    """Fake quantization of a weight (`cq_weight`); `step` is a parameter when LSQ is on."""

    def __init__(self, config: QuantConfig, weight: torch.Tensor) -> None:
        super().__init__()
        assert config.bits_weight is not None
        self.bits = config.bits_weight
        self.symmetric = config.symmetric
        self.per_channel = config.granularity == "per_channel"
        self.observer = config.observer
        self.percentile = float(config.percentile)
        self.learnable = config.learnable_step
        if self.learnable:
            scale, zp = self.observed(weight)
            self.step = nn.Parameter(scale.clone())
            self.register_buffer("zero_point", zp.clone())

    def observed(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The observer's `(scale, zero_point)` for `w` (per channel `[C]` or `[1]`)."""
        return weight_qparams(w, self.bits, self.symmetric, self.per_channel, self.observer, self.percentile)

    def qparams(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The `(scale, zero_point)` this transform uses for weight `w`, `[C]` or `[1]`."""
        if self.learnable:
            return self.step.detach().abs().clamp(min=_EPS), self.zero_point
        return self.observed(w)

    def codes(self, w: torch.Tensor) -> torch.Tensor:
        """Signed integer grid indices of `w` (what `convert` stores)."""
        scale, zp = self.qparams(w)
        return quantize_codes(
            w.detach(), _channel_view(scale, w), _channel_view(zp, w), self.bits, self.symmetric
        )

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if not self.learnable:
            with torch.no_grad():  # q is a constant for autograd: recording it would only cost time
                if self.symmetric and self.observer == "minmax" and self.bits > 1:
                    q = self._fast_minmax(w)
                else:
                    scale, zp = (_channel_view(t, w) for t in self.observed(w))
                    q = dequantize(
                        quantize_codes(w, scale, zp, self.bits, self.symmetric),
                        scale,
                        zp,
                        self.bits,
                        self.symmetric,
                    )
            return _ste(q, w)
        return lsq(w, self.step, self.zero_point, self.bits, self.symmetric, per_channel=self.per_channel)

    def forward_tasks(self, weights: torch.Tensor) -> torch.Tensor:
        """`weights [tasks, ...]` each quantized as `forward` would alone (the LSQ step is shared)."""
        if not self.learnable:
            if not (self.symmetric and self.observer == "minmax" and self.bits > 1):
                return super().forward_tasks(weights)  # the other observers: task by task
            with torch.no_grad():
                q = self._fast_minmax(weights, lead=1)
            return _ste(q, weights)
        per = weights[0, 0].numel() if self.per_channel and weights.dim() > 2 else weights[0].numel()
        if self.per_channel and self.step.numel() > 1:  # channels first, so the step broadcasts along dim 0
            x = weights.movedim(1, 0)
            out = lsq(x, self.step, self.zero_point, self.bits, self.symmetric, per_channel=True, per=per)
            return out.movedim(0, 1)
        return lsq(weights, self.step, self.zero_point, self.bits, self.symmetric, per_channel=False, per=per)

    def _fast_minmax(self, w: torch.Tensor, lead: int = 0) -> torch.Tensor:
        """Symmetric min-max fake quantization in few ops (the QAT hot path); same values as in general."""
        qmin, qmax = qrange(self.bits, True)
        mag = w.abs()
        first = lead + 1 if self.per_channel and w.dim() > lead + 1 else lead  # reduce from this dim on
        amax = mag.amax(dim=tuple(range(first, w.dim())), keepdim=True) if first < w.dim() else mag
        scale = amax.clamp(min=_EPS) / qmax
        return torch.round(w / scale).clamp(qmin, qmax) * scale  # out of place: vmap has no clamp_ rule

    def extra_repr(self) -> str:
        mode = "per_channel" if self.per_channel else "per_tensor"
        sym = "sym" if self.symmetric else "asym"
        return f"bits={self.bits}, {sym}, {mode}, observer={self.observer}, lsq={self.learnable}"


def lsq(
    x: torch.Tensor,
    step: torch.Tensor,
    zero_point: torch.Tensor,
    bits: int,
    symmetric: bool,
    per_channel: bool,
    per: int | None = None,
) -> torch.Tensor:
    """LSQ fake quantization: exact grid values; gradients to `x` (STE, zero outside the clip) and `step`.

    `per`: the values each step quantizes, for the step's gradient scale (default: from `x`).
    """
    qmin, qmax = qrange(bits, symmetric)
    step = step.abs().clamp(min=_EPS)
    if per is None:
        per = x[0].numel() if per_channel and x.dim() > 1 and step.numel() > 1 else x.numel()
    g = 1.0 / math.sqrt(per * max(qmax, 1))
    s = step.detach() + (step * g - (step * g).detach())  # value of step, gradient scaled by g
    s = _channel_view(s, x) if x.dim() > 1 else s
    zp = _channel_view(zero_point, x) if x.dim() > 1 else zero_point
    if symmetric and bits == 1:
        sign = torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))
        return sign * s + (x - x.detach())
    v = x / s
    r = torch.round(v).detach() + (v - v.detach())  # round with STE
    q = torch.clamp(r + zp, qmin, qmax)  # the clamp stops the gradient outside the range
    return dequantize(q, s, zp, bits, symmetric)


class ActQuant(nn.Module):
    """Fake quantization of the input activations of a layer (`cq_act`), asymmetric per tensor.

    `scale` is 0 until `calibrate` sets it; until then each batch uses its own min-max range.
    With LSQ, `scale` is a parameter (trained once calibrated).
    """

    def __init__(self, config: QuantConfig) -> None:
        super().__init__()
        assert config.bits_act is not None
        self.bits = config.bits_act
        self.observer = config.observer
        self.percentile = float(config.percentile)
        self.learnable = config.learnable_step
        if self.learnable:
            self.scale = nn.Parameter(torch.zeros(()))
        else:
            self.register_buffer("scale", torch.zeros(()))
        self.register_buffer("zero_point", torch.zeros(()))
        self._observed: list[torch.Tensor] | None = None

    def qparams(self, x: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """`(scale, zero_point)` for input `x` (static when calibrated, else from `x`)."""
        static = self.scale.detach() > 0
        if x is None:
            return self.scale.detach(), self.zero_point
        lo = x.detach().amin().clamp(max=0.0)
        hi = x.detach().amax().clamp(min=0.0)
        dyn_scale, dyn_zp = scale_zero_point(lo, hi, self.bits, symmetric=False)
        return torch.where(static, self.scale.abs(), dyn_scale), torch.where(static, self.zero_point, dyn_zp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._observed is not None:
            flat = x.detach().reshape(-1)
            stride = max(1, flat.numel() // 65536)
            self._observed.append(flat[::stride].clone())
        scale, zp = self.qparams(x)
        if self.learnable:
            return lsq(x, scale, zp, self.bits, symmetric=False, per_channel=False)
        with torch.no_grad():
            q = dequantize(quantize_codes(x, scale, zp, self.bits, False), scale, zp, self.bits, False)
        return _ste(q, x)

    def forward_tasks(self, x: torch.Tensor, task_dim: int) -> torch.Tensor:
        """`x` holding several tasks along `task_dim`, each fake-quantized as `forward` would alone:
        one static range once calibrated, else each task's own min-max range."""
        if self._observed is not None or bool(self.scale.detach() > 0):
            return self(x)
        xt = x.movedim(task_dim, 0)
        flat = xt.detach().reshape(xt.shape[0], -1)
        lo, hi = flat.amin(1).clamp(max=0.0), flat.amax(1).clamp(min=0.0)
        scale, zp = (_channel_view(t, xt) for t in scale_zero_point(lo, hi, self.bits, symmetric=False))
        if self.learnable:  # the dynamic range is a constant: LSQ's forward and input gradient
            qmin, qmax = qrange(self.bits, False)
            v = xt / scale
            r = torch.round(v).detach() + (v - v.detach())
            out = (torch.clamp(r + zp, qmin, qmax) - zp) * scale
        else:
            with torch.no_grad():
                q = dequantize(quantize_codes(xt, scale, zp, self.bits, False), scale, zp, self.bits, False)
            out = _ste(q, xt)
        return out.movedim(0, task_dim)

    def start_observing(self) -> None:
        """Collect (a subsample of) every input until `finish_observing`."""
        self._observed = []

    @torch.no_grad()
    def finish_observing(self) -> None:
        """Set the static scale and zero point from what was observed (no-op if nothing was)."""
        seen, self._observed = self._observed, None
        if not seen:
            return
        values = torch.cat(seen).reshape(1, -1)
        lo, hi = observe_range(values, self.bits, False, self.observer, self.percentile)
        scale, zp = scale_zero_point(lo, hi, self.bits, symmetric=False)
        self.scale.copy_(scale.reshape(()))
        self.zero_point.copy_(zp.reshape(()))

    def extra_repr(self) -> str:
        return f"bits={self.bits}, asym, per_tensor, observer={self.observer}, lsq={self.learnable}"


def _parse(args: list[str]) -> QuantConfig:
    """`w4`, `a8`, `w4a8` then options (per_tensor|per_channel, sym|asym, minmax|percentile|mse, lsq)."""
    if not args:
        raise ConfigError("spec: quant needs bit widths, e.g. quant:w4 or quant:w4a8")
    kwargs: dict[str, Any] = {"bits_weight": None, "bits_act": None}
    match = re.fullmatch(r"(?:w(\d+))?(?:a(\d+))?", args[0])
    if not match or not any(match.groups()):
        raise ConfigError(f"spec: quant widths must look like w4, a8 or w4a8, got {args[0]!r}")
    if match.group(1):
        kwargs["bits_weight"] = int(match.group(1))
    if match.group(2):
        kwargs["bits_act"] = int(match.group(2))
    for opt in args[1:]:
        if opt in GRANULARITIES:
            kwargs["granularity"] = opt
        elif opt in ("sym", "asym"):
            kwargs["symmetric"] = opt == "sym"
        elif opt in OBSERVERS:
            kwargs["observer"] = opt
        elif opt == "lsq":
            kwargs["learnable_step"] = True
        else:
            raise ConfigError(
                f"spec: unknown quant option {opt!r}; "
                "use per_tensor|per_channel, sym|asym, minmax|percentile|mse, lsq"
            )
    return QuantConfig(**kwargs)


@register_method("quant", QuantConfig, _parse)
def _install(layer: Any, config: QuantConfig, name: str, model: nn.Module) -> None:
    assert isinstance(layer, CompressedMixin)
    if config.bits_weight is not None:
        if hasattr(layer, "cq_weight") or hasattr(layer, "cq_codebook"):
            raise ConfigError(
                f"spec: layer {name} is already quantized or clustered; one value method per layer"
            )
        with torch.no_grad():
            seen = layer.compress_weight(layer.weight)  # type: ignore[attr-defined]
        layer.add_transform("cq_weight", WeightQuant(config, seen))
    if config.bits_act is not None:
        if hasattr(layer, "cq_act"):
            raise ConfigError(f"spec: layer {name} has its activations quantized twice")
        act = ActQuant(config).to(layer.weight.device)  # type: ignore[attr-defined]
        layer.add_transform("cq_act", act)
