"""Batched functional forwards: a model run on a meta-batch of tasks with per-task parameters.

`batched_forward(model)` returns `forward(params, x, embed=False)` with params `[tasks, ...]`
and inputs `[tasks, n, ...]`, giving outputs `[tasks, n, ...]`. For Sequential backbones
made of Conv2d / BatchNorm / ReLU / MaxPool2d / Flatten / Linear (Conv-4, the MLP), plain or
compressed, the tasks are folded into channels: one grouped convolution (groups = tasks) per
layer and a batch norm over `[n, tasks*channels, H, W]`, which is per-task batch normalisation.
On a CPU this is much faster and leaner than `torch.func.vmap`, which stays the generic
fallback for any other module (ResNet-12). A compressed layer's weight is compressed once when
the tasks share it (ProtoNet: the params are expanded views) and task by task when they do
not (MAML's fast weights); its input activations are quantized with each task's own range
until calibrated, exactly as the layer does for one task.

Why `F.batch_norm` is safe here although the hand-written BatchNorm avoids it: the wrong
second-order gradients were a vmap batching-rule problem; here there is no vmap, only
ordinary autograd through the fused op.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from fewbit.compress.layers import CompressedBatchNorm, CompressedConv2d, CompressedLinear, CompressedMixin
from fewbit.meta.base import Params
from fewbit.models.backbone import Backbone
from fewbit.models.layers import BatchNorm, Flatten

BatchedForward = Callable[..., torch.Tensor]  # (params [tasks,...], x [tasks, n, ...], embed=False)


def vmap_forward(model: nn.Module) -> BatchedForward:
    """The generic batched forward: `vmap` of `functional_call` over tasks."""

    def forward(params: Params, x: torch.Tensor, embed: bool = False, **_: object) -> torch.Tensor:
        kwargs = {"embed": True} if embed else {}
        return vmap(lambda p, xi: functional_call(model, p, (xi,), kwargs))(params, x)

    return forward


def shared_forward(model: nn.Module) -> BatchedForward:
    """Tasks sharing one set of (unbatched) params, each normalised with its own batch statistics."""

    def forward(params: Params, x: torch.Tensor, embed: bool = False, **_: object) -> torch.Tensor:
        kwargs = {"embed": True} if embed else {}
        return vmap(lambda xi: functional_call(model, params, (xi,), kwargs))(x)

    return forward


def _layers(module: nn.Module, prefix: str) -> list[tuple[str, nn.Module]] | None:
    """The flat list of (name, leaf module) of nested Sequentials, or None if anything is unsupported."""
    out: list[tuple[str, nn.Module]] = []
    for name, child in module.named_children():
        full = f"{prefix}{name}"
        if isinstance(child, nn.Sequential):
            inner = _layers(child, full + ".")
            if inner is None:
                return None
            out += inner
        elif _supported(child):
            out.append((full, child))
        else:
            return None
    return out


def _supported(m: nn.Module) -> bool:
    if isinstance(m, (CompressedConv2d, CompressedLinear, CompressedBatchNorm)):
        pass  # compression state lives in cq_* children and buffers, applied below
    elif list(m.buffers()) or any(True for _ in m.children()):
        return False
    if isinstance(m, nn.Conv2d):
        return type(m) in (nn.Conv2d, CompressedConv2d) and m.groups == 1 and m.padding_mode == "zeros" and isinstance(
            m.padding, tuple)
    return type(m) in (BatchNorm, CompressedBatchNorm, nn.ReLU, nn.MaxPool2d, Flatten, nn.Flatten, nn.Linear,
                       CompressedLinear, nn.Identity)


def _task_weight(m: nn.Module, w: torch.Tensor) -> torch.Tensor:
    """Weights `[tasks, ...]` as the layer uses them: compressed once when the tasks share one
    (an expanded view), else each task's weight alone, in one pass."""
    if not isinstance(m, CompressedMixin):
        return w
    if w.stride(0) == 0:  # every task holds the same weight
        return m.compress_weight(w[0]).unsqueeze(0).expand_as(w)
    return m.compress_weight_tasks(w)


def _task_bias(m: nn.Module, b: torch.Tensor | None) -> torch.Tensor | None:
    return m.compress_bias(b) if b is not None and isinstance(m, CompressedMixin) else b


def _task_input(m: nn.Module, h: torch.Tensor, tasks: int, task_dim: int) -> torch.Tensor:
    """The layer's input fake-quantized as it would be for each task alone (`task_dim` indexes tasks)."""
    act = getattr(m, "cq_act", None) if isinstance(m, CompressedMixin) else None
    if act is None:
        return h
    return act.forward_tasks(h, task_dim)


def grouped_layers(model: nn.Module) -> list[tuple[str, nn.Module]] | None:
    """The layers of a Backbone the grouped forward handles, or None (use vmap)."""
    if not isinstance(model, Backbone) or not isinstance(model.features, nn.Sequential):
        return None
    if not _supported(model.head):
        return None
    layers = _layers(model.features, "features.")
    if layers is None:
        return None
    for i in range(len(layers) - 1):  # ReLU then max-pool == max-pool then ReLU, on 4x fewer values
        if isinstance(layers[i][1], nn.ReLU) and isinstance(layers[i + 1][1], nn.MaxPool2d):
            layers[i], layers[i + 1] = layers[i + 1], layers[i]
    return layers + [("head", model.head)]


def grouped_forward(model: nn.Module, layers: list[tuple[str, nn.Module]]) -> BatchedForward:
    """Tasks folded into channels (grouped conv, per-task batch norm); see the module docstring.

    `channels_last` (None: for batches of 16 or more per task) speeds up pooling, convolution
    and batch norm on a CPU, but its reductions are slow in batch norm's double backward, so
    the second-order (support) pass is better left in the default layout.
    """

    def forward(
        params: Params, x: torch.Tensor, embed: bool = False, channels_last: bool | None = None
    ) -> torch.Tensor:
        tasks, n = x.shape[0], x.shape[1]
        spatial = x.dim() == 5
        # folded: [n, tasks*C, H, W]; flat: [tasks, n, F]
        h = x.transpose(0, 1).reshape(n, -1, *x.shape[3:]) if spatial else x.reshape(tasks, n, -1)
        if channels_last is None:
            channels_last = n >= 16
        if spatial and channels_last:
            h = h.contiguous(memory_format=torch.channels_last)
        for name, m in layers:
            if name == "head" and embed:
                break
            if isinstance(m, nn.Conv2d):
                w = _task_weight(m, params[f"{name}.weight"])  # [tasks, out, in, k, k]
                b = _task_bias(m, params.get(f"{name}.bias"))
                if isinstance(m, CompressedMixin) and getattr(m, "cq_act", None) is not None:
                    h = _task_input(m, h.unflatten(1, (tasks, -1)), tasks, 1).flatten(1, 2)
                h = F.conv2d(
                    h,
                    w.reshape(-1, *w.shape[2:]),
                    None if b is None else b.reshape(-1),
                    m.stride,
                    m.padding,
                    m.dilation,
                    groups=tasks,
                )
            elif isinstance(m, BatchNorm):
                w, b = params[f"{name}.weight"], params[f"{name}.bias"]
                if isinstance(m, CompressedBatchNorm):
                    w, b = m.compress_params(w, b)
                if spatial:
                    h = F.batch_norm(h, None, None, w.reshape(-1), b.reshape(-1), True, 0.0, m.eps)
                else:
                    mean = h.mean(1, keepdim=True)
                    var = (h - mean).pow(2).mean(1, keepdim=True)
                    h = (h - mean) * torch.rsqrt(var + m.eps) * w.unsqueeze(1) + b.unsqueeze(1)
            elif isinstance(m, nn.ReLU):
                h = F.relu(h)
            elif isinstance(m, nn.MaxPool2d):
                h = F.max_pool2d(h, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)
            elif isinstance(m, (Flatten, nn.Flatten, nn.Linear)):
                if spatial:  # [n, tasks*C, H, W] -> [tasks, n, C*H*W]
                    h = h.reshape(n, tasks, -1).transpose(0, 1)
                    spatial = False
                if isinstance(m, nn.Linear):
                    w = _task_weight(m, params[f"{name}.weight"])  # [tasks, out, in]
                    b = _task_bias(m, params.get(f"{name}.bias"))
                    h = _task_input(m, h, tasks, 0)
                    h = (
                        torch.bmm(h, w.transpose(1, 2))
                        if b is None
                        else torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
                    )
        if spatial:
            h = h.reshape(n, tasks, -1).transpose(0, 1)
        return h

    return forward


def batched_forward(model: nn.Module) -> BatchedForward:
    """The fastest batched forward available for `model` (grouped if supported, else vmap)."""
    layers = grouped_layers(model)
    return vmap_forward(model) if layers is None else grouped_forward(model, layers)


def single_forward(model: nn.Module) -> BatchedForward:
    """The reference forward for one task: unbatched params, inputs `[1, n, ...]`."""

    def forward(params: Params, x: torch.Tensor, embed: bool = False, **_: object) -> torch.Tensor:
        kwargs = {"embed": True} if embed else {}
        return functional_call(model, params, (x.squeeze(0),), kwargs).unsqueeze(0)

    return forward


def expand_params(params: Params, tasks: int) -> Params:
    """Each parameter repeated (as a view) along a new leading `tasks` dimension."""
    return {n: p.unsqueeze(0).expand(tasks, *p.shape) for n, p in params.items()}


def module_head_forward(model: nn.Module) -> Callable[[Params, torch.Tensor], torch.Tensor]:
    """The head of `model` on embeddings `z [tasks, n, D]`, run through the head module itself.

    A plain `nn.Linear` head uses `head_forward`; any other head (a compressed one, whose
    forward quantizes its weight and input) is called with `functional_call`, vmapped over tasks
    when its params carry a leading tasks dimension.
    """
    head = model.head  # type: ignore[union-attr]
    if type(head) is nn.Linear:
        return head_forward

    def forward(params: Params, z: torch.Tensor) -> torch.Tensor:
        own = {n.removeprefix("head."): p for n, p in params.items() if n.startswith("head.")}
        if own["weight"].dim() == head.weight.dim() + 1:  # batched over tasks
            return vmap(lambda p, zi: functional_call(head, p, (zi,)))(own, z)
        return functional_call(head, own, (z.reshape(-1, z.shape[-1]),)).reshape(*z.shape[:-1], -1)

    return forward


def head_forward(params: Params, z: torch.Tensor) -> torch.Tensor:
    """The linear head on embeddings `z [tasks, n, D]`; head params batched `[tasks, ...]` or shared."""
    w, b = params["head.weight"], params.get("head.bias")
    out = z @ w.transpose(-1, -2)
    return out if b is None else out + b.unsqueeze(-2)
