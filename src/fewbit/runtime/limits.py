"""What an artifact may ask of the runtime, checked before any work: the documented limits.

A valid checksum only proves that an artifact was not damaged, not that it is reasonable: a
manifest can claim a million input channels, a billion adaptation steps, or convolutions wide
enough to need tens of GiB per image. `check_manifest` rejects such a manifest when it is
loaded (FewbitFormatError), `image_cost` estimates from the layer shapes what one image costs
to run (no array is allocated to find out), and `check_batch` refuses a batch or an adaptation
whose estimate is over the budget (LimitError) before it starts. The limits are far above any
few-shot model (a Conv-4 at 28x28 needs about 0.5 MiB and 10 M multiply-adds per image).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from fewbit._io import non_finite_path
from fewbit.errors import FewbitFormatError, LimitError
from fewbit.runtime.preprocess import MAX_IMAGE_SIZE, MAX_TABLE_FEATURES, preprocessing_from_dict

MAX_IMAGE_SIDE = MAX_IMAGE_SIZE  # pixels of the model's input, per side
MAX_INPUT_CHANNELS = 16
MAX_LAYERS = 512
MAX_WIDTH = 16_384  # channels (or features) of any activation
MAX_ADAPT_STEPS = 10_000
MAX_IMAGE_BYTES = 256 << 20  # memory one image needs in a forward pass
MAX_BATCH_BYTES = 4 << 30  # memory of one forward pass, or of one adaptation step, over its whole batch
MAX_ADAPT_MACS = 10**13  # multiply-adds of a whole adaptation (about an hour of one CPU core)
MIN_STD = 1e-6  # preprocessing divides by std
INVERT_CHOICES = (True, False, "auto")
FLOAT32_BYTES = 4


@dataclasses.dataclass(frozen=True)
class ImageCost:
    """What one image costs a model: peak bytes of a forward pass, bytes kept for a backward
    pass through the whole network, and multiply-adds of one forward pass; plus the bytes a pass
    needs whatever its batch (weights made float for it, scratch of a fixed size)."""

    forward_bytes: int
    backward_bytes: int
    macs: int
    batch_bytes: int = 0

    def bytes_for(self, images: int, backward: bool = False) -> int:
        """Estimated peak bytes of a pass over `images` images."""
        return images * (self.backward_bytes if backward else self.forward_bytes) + self.batch_bytes


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def check_manifest(manifest: Mapping[str, Any]) -> None:
    """FewbitFormatError unless the architecture header, preprocessing and adaptation blocks are
    well-typed and within the limits (the layers themselves are checked as they are built)."""
    bad = non_finite_path(manifest)
    if bad is not None:
        raise FewbitFormatError(f"malformed manifest: {bad} is not a finite number")
    arch = manifest.get("architecture")
    if not isinstance(arch, dict):
        raise FewbitFormatError("malformed manifest: no architecture")
    shape = arch.get("input_shape")
    if not (isinstance(shape, list) and len(shape) in (1, 3) and all(isinstance(d, int) for d in shape)):
        raise FewbitFormatError(f"malformed manifest: input_shape {_short(shape)}")
    pre = manifest.get("preprocessing")
    kind = pre.get("kind", "image") if isinstance(pre, dict) else None
    if kind not in (None, "image", "table"):  # another kind checks its own fields and limits
        _check_other_preprocessing(pre, shape)
    elif len(shape) == 1:  # a table's rows
        if not _int(shape[0], 1, MAX_TABLE_FEATURES):
            raise FewbitFormatError(
                f"artifact input_shape {shape} is beyond the limit of {MAX_TABLE_FEATURES} features")
    else:
        channels, height, width = shape
        sides_ok = _int(height, 1, MAX_IMAGE_SIDE) and _int(width, 1, MAX_IMAGE_SIDE)
        if not (_int(channels, 1, MAX_INPUT_CHANNELS) and sides_ok):
            raise FewbitFormatError(
                f"artifact input_shape {shape} is beyond the limits ({MAX_INPUT_CHANNELS} channels, "
                f"{MAX_IMAGE_SIDE} pixels a side)"
            )
    layers = arch.get("layers")
    if not (isinstance(layers, list) and 0 < len(layers) <= MAX_LAYERS and all(isinstance(x, dict) for x in layers)):
        raise FewbitFormatError(f"malformed manifest: architecture needs 1..{MAX_LAYERS} layers, each a mapping")
    if not _int(arch.get("embedding_layers"), 1, len(layers)):
        raise FewbitFormatError(f"malformed manifest: embedding_layers={_short(arch.get('embedding_layers'))}")
    if kind in (None, "image", "table"):
        _check_preprocessing(pre, shape)
    _check_adaptation(manifest.get("adaptation"))
    if not isinstance(manifest.get("algorithm", ""), str):
        raise FewbitFormatError(f"malformed manifest: algorithm={_short(manifest.get('algorithm'))}")


def _check_other_preprocessing(pre: dict[str, Any], shape: Sequence[int]) -> None:
    """A registered kind of preprocessing (series, ...): its own validation, and its input shape."""
    try:
        rule = preprocessing_from_dict(pre)
    except ValueError as exc:
        raise FewbitFormatError(f"artifact {exc}") from None
    if list(rule.input_shape) != list(shape):
        raise FewbitFormatError(f"artifact preprocessing gives inputs {list(rule.input_shape)}, but its input shape "
                                f"is {list(shape)}")


def _check_preprocessing(pre: Any, shape: Sequence[int]) -> None:
    if not isinstance(pre, dict):
        raise FewbitFormatError("malformed manifest: no preprocessing block")
    if len(shape) == 3:
        size, channels = pre.get("image_size"), pre.get("channels", 1)
        if not _int(size, 1, MAX_IMAGE_SIDE) or (size, size) != (shape[1], shape[2]):
            raise FewbitFormatError(
                f"artifact preprocessing.image_size={_short(size)} does not match its input shape {list(shape)}"
            )
        if not _int(channels, 1, MAX_INPUT_CHANNELS) or channels != shape[0]:
            raise FewbitFormatError(
                f"artifact preprocessing.channels={_short(channels)} does not match its input shape {list(shape)}"
            )
        if pre.get("invert", "auto") not in INVERT_CHOICES:
            raise FewbitFormatError(
                f"artifact preprocessing.invert={_short(pre.get('invert'))}: use true, false or auto")
    elif pre.get("kind") != "table":
        raise FewbitFormatError(f"artifact input_shape {list(shape)} is a table's, but its preprocessing is not")
    for key, default in (("mean", 0.0), ("std", 1.0)):
        values = pre.get(key, default)
        values = values if isinstance(values, list) else [values]
        if not values or len(values) > max(MAX_INPUT_CHANNELS, MAX_TABLE_FEATURES):
            raise FewbitFormatError(f"artifact preprocessing.{key} has {len(values)} values")
        for v in values:
            if key == "mean" and (not _number(v) or abs(v) > 1e6):
                raise FewbitFormatError(f"artifact preprocessing.mean={_short(v)} is not a finite number")
            if key == "std" and (not _number(v) or not MIN_STD <= v <= 1e6):
                raise FewbitFormatError(
                    f"artifact preprocessing.std={_short(v)} must be a number in [{MIN_STD}, 1e6] "
                    f"(inputs are divided by it)"
                )


def _check_adaptation(block: Any) -> None:
    if block is None:
        return
    if not isinstance(block, dict):
        raise FewbitFormatError("malformed manifest: the adaptation block is not a mapping")
    for key in ("method", "embed", "scope", "head_init"):
        if key in block and not isinstance(block[key], str):
            raise FewbitFormatError(f"artifact adaptation.{key}={_short(block[key])} is not a name")
    if "steps" in block:
        check_steps(block["steps"], "artifact adaptation.steps", FewbitFormatError)
    if "lr" in block:
        check_lr(block["lr"], "artifact adaptation.lr", FewbitFormatError)


def check_steps(steps: Any, what: str = "steps", error: type[Exception] = LimitError) -> int:
    """`steps` as an int in 0..MAX_ADAPT_STEPS, else `error` naming `what`."""
    if not _int(steps, 0, MAX_ADAPT_STEPS):
        raise error(f"{what}={_short(steps)}: must be an integer in 0..{MAX_ADAPT_STEPS}")
    return int(steps)


def check_lr(lr: Any, what: str = "lr", error: type[Exception] = LimitError) -> float:
    """`lr` as a finite float > 0, else `error` naming `what` (an infinite rate makes every weight NaN)."""
    if not _number(lr) or not 0 < lr <= 1e6:
        raise error(f"{what}={_short(lr)}: must be a finite number in (0, 1e6]")
    return float(lr)


def image_cost(ops: Sequence[Any], input_shape: tuple[int, ...], shapes: Sequence[tuple[int, ...]]) -> ImageCost:
    """The cost of one image through `ops`, whose outputs have `shapes` (batch excluded) for an
    input of `input_shape` (H, W, C), or (F,) for a table's row. Each op may report scratch elements and multiply-adds
    through `work(in_shape, out_shape)`; FewbitFormatError when an activation or the total is
    beyond the limits."""
    forward = backward = macs = fixed = 0
    previous: tuple[int, ...] = input_shape
    for i, (op, shape) in enumerate(zip(ops, shapes)):
        if len(shape) == 3 and shape[-1] > MAX_WIDTH:  # channels; a flat size is bounded by the bytes below
            raise FewbitFormatError(f"artifact layer {i} is {shape[-1]} wide, more than the limit {MAX_WIDTH}")
        scratch, op_fixed, op_macs = op.work(previous, shape) if hasattr(op, "work") else (0, 0, 0)
        inp, out = math.prod(previous), math.prod(shape)
        forward = max(forward, FLOAT32_BYTES * (inp + out + scratch))
        backward += FLOAT32_BYTES * (2 * inp + 2 * out)  # what the layer keeps for its backward pass
        macs += op_macs
        fixed += op_fixed
        previous = shape
    backward += forward
    cost = ImageCost(forward, backward, macs, fixed)
    if cost.forward_bytes > MAX_IMAGE_BYTES:
        raise FewbitFormatError(
            f"artifact needs {_mib(cost.forward_bytes)} per image for a forward pass, more than the limit "
            f"{_mib(MAX_IMAGE_BYTES)}"
        )
    return cost


def check_batch(cost: ImageCost, images: int, *, backward: bool = False, what: str = "a batch") -> None:
    """LimitError when `images` images at once need more than MAX_BATCH_BYTES."""
    need = cost.bytes_for(images, backward)
    if need > MAX_BATCH_BYTES:
        raise LimitError(
            f"{what} of {images} images needs about {_mib(need)} with this model, more than the limit "
            f"{_mib(MAX_BATCH_BYTES)}; use fewer images at once"
        )


def check_adaptation_work(cost: ImageCost, images: int, steps: int, *, backward: bool) -> None:
    """LimitError when `steps` steps on `images` support images need more memory or multiply-adds than allowed."""
    check_batch(cost, images, backward=backward, what="adapting on a support set")
    work = steps * images * cost.macs * (3 if backward else 1) + images * cost.macs
    if work > MAX_ADAPT_MACS:
        raise LimitError(
            f"adapting for {steps} steps on {images} images needs about {work:.2g} multiply-adds, more than "
            f"the limit {MAX_ADAPT_MACS:.0e}; use fewer --steps or images"
        )


def _mib(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.1f} MiB"


def _short(value: Any) -> str:
    text = repr(value) if isinstance(value, (int, float, bool, str, type(None))) else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."
