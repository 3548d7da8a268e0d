"""How a model's inputs enter the C runtime, by the kind of the artifact's preprocessing.

- `image`: uint8 pixels `[C][H][W]` at the model's size, as a camera gives them. The C code
  normalises them through a table of the 256 pixel values of each channel (the artifact's own
  `ImagePreprocessing.normalize`) and quantizes them as the first layer does.
- `series`: float32 values `[C][1][L]`, already prepared as the artifact says (its length rule
  and norm: `fewbit.runtime.series.SeriesPreprocessing.prepare`), the very values the numpy
  runtime takes. The C code quantizes them as the first layer does, in float32 with numpy's
  operations (`clip(rint(v / scale) + zero_point)`), so the C code and the numpy runtime read the
  same codes from the same values, and an integer body's Q16 embeddings are equal bit for bit.

Why float values and not bytes for a series: a series has no 8-bit form of its own (its units are
volts, g or degrees, not pixel levels), so bytes would be a quantization the caller must do with
the first layer's grid; but a first layer whose range is taken from the support set (what
meta-training leaves, uncalibrated) has no grid before the support set is seen, and a float body
has no quantizer at all. The norm stays the caller's: numpy computes a z-score in float64 with
pairwise sums, which C would match only to rounding, and a value one rounding apart can land on
the next code. Float inputs cost only the caller's buffers (4 bytes a value: 6 KB for 3 channels
of 512 steps); the arena holds the first layer's codes, one byte a value, as for images.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fewbit._io import atomic_write_bytes
from fewbit.deploy.c_export.literals import comment_text
from fewbit.deploy.c_export.pixels import input_to_pixels, pixels_to_input
from fewbit.errors import ConfigError
from fewbit.runtime.model import RuntimeModel

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # escaped in classes.txt: one class name a line, always


class CInput:
    """One way inputs enter the C runtime: the C type of a value, and the conversions between the C
    program's inputs (`raw`) and the float32 model inputs `[N, C, H, W]` the numpy runtime takes."""

    kind = ""
    ctype = ""
    dtype = np.dtype(np.uint8)  # of the raw values as the C program reads them (task files, the M4 image)

    @property
    def floats(self) -> bool:
        """Whether the C runtime takes float32 values (`FEWBIT_INPUT_FLOAT`)."""
        return self.ctype == "float"

    def to_model(self, raw: np.ndarray, preprocessing: Mapping[str, Any]) -> np.ndarray:
        """The float32 model inputs of the C program's inputs `raw`."""
        raise NotImplementedError

    def from_model(self, x: np.ndarray, preprocessing: Mapping[str, Any]) -> np.ndarray:
        """The C program's inputs whose model inputs are `x` (ValueError when there are none)."""
        raise NotImplementedError

    def to_bytes(self, raw: np.ndarray) -> bytes:
        """`raw` as the bytes the example program and the M4 image read (channel-major)."""
        return np.ascontiguousarray(raw, dtype=self.dtype).tobytes()

    def lookup_table(self, model: RuntimeModel) -> np.ndarray | None:
        """The C code's table of normalised values per channel (`fb_lut`), or None without one."""
        return None

    def header_doc(self, model: RuntimeModel) -> str:
        """The generated header's paragraph on inputs (a C comment's lines)."""
        raise NotImplementedError


class PixelInput(CInput):
    kind = "image"
    ctype = "uint8_t"

    def to_model(self, raw: np.ndarray, preprocessing: Mapping[str, Any]) -> np.ndarray:
        return pixels_to_input(np.asarray(raw), preprocessing)

    def from_model(self, x: np.ndarray, preprocessing: Mapping[str, Any]) -> np.ndarray:
        return input_to_pixels(x, preprocessing)

    def lookup_table(self, model: RuntimeModel) -> np.ndarray:
        """Per input channel, the normalised value of each pixel value 0..255: the artifact's own
        `ImagePreprocessing.normalize` of the 256 values (the C code quantizes it as the first layer does)."""
        channels = model.input_shape[0]
        pixels = np.broadcast_to(np.arange(256, dtype=np.uint8), (1, channels, 1, 256))
        return model.prep.normalize(pixels)[0, :, 0, :].astype(np.float32)  # type: ignore[attr-defined]

    def header_doc(self, model: RuntimeModel) -> str:
        ink = "ink is the high value" if model.preprocessing.get("invert", "auto") != "none" else "as photographed"
        return (
            " * Images are uint8 [FEWBIT_INPUT_CHANNELS][FEWBIT_INPUT_HEIGHT][FEWBIT_INPUT_WIDTH], already in the\n"
            f" * model's size and colour convention ({ink}); scaling to [0, 1] and the artifact's mean/std\n"
            " * normalisation happen inside. Support sets are n such images back to back, labels 0..ways-1."
        )


class SeriesInput(CInput):
    kind = "series"
    ctype = "float"
    dtype = np.dtype("<f4")

    def to_model(self, raw: np.ndarray, preprocessing: Mapping[str, Any]) -> np.ndarray:
        return np.asarray(raw, np.float32)

    def from_model(self, x: np.ndarray, preprocessing: Mapping[str, Any]) -> np.ndarray:
        return np.asarray(x, np.float32)

    def header_doc(self, model: RuntimeModel) -> str:
        pre = model.preprocessing
        rule = comment_text(f"length rule {pre.get('length_rule')}, norm {pre.get('norm')}")
        return (
            " * Series are float [FEWBIT_INPUT_CHANNELS][1][FEWBIT_INPUT_WIDTH] (channel-major: each channel's\n"
            " * FEWBIT_INPUT_WIDTH time steps in turn), already prepared as the artifact says (" + rule + ";\n"
            " * fewbit.runtime.series.SeriesPreprocessing.prepare): the values the numpy runtime takes. The first\n"
            " * layer quantizes them inside, in float32 as numpy does, so both read the same codes from the same\n"
            " * values. Support sets are n such series back to back, labels 0..ways-1."
        )


C_INPUTS: dict[str, CInput] = {form.kind: form for form in (PixelInput(), SeriesInput())}


def c_input(preprocessing: Mapping[str, Any]) -> CInput:
    """How inputs of an artifact with this preprocessing enter the C runtime; ConfigError for a kind
    the C runtime does not take (a table's rows: use the numpy runtime or ONNX)."""
    kind = preprocessing.get("kind", "image")
    form = C_INPUTS.get(kind)
    if form is None:
        raise ConfigError(f"C export: the C runtime takes images (uint8 pixels) or series (float32 values); this "
                          f"model's inputs are of kind {comment_text(kind)!r}: use the numpy runtime (fewbit.runtime) "
                          "or --format onnx")
    return form


def write_task_files(
    folder: str | os.PathLike[str],
    support_inputs: np.ndarray,
    support_labels: np.ndarray,
    query_inputs: np.ndarray,
    form: CInput | None = None,
    classes: Sequence[str] | None = None,
) -> tuple[Path, Path]:
    """The example program's inputs: `support.bin` (label byte + one input per image or series)
    and `query.bin` (one input each), channel-major, as `form` takes them (default: uint8 pixels;
    `c_input(model.preprocessing)` says a model's). With `classes`, also `classes.txt`: the name of
    label i on line i + 1 (control characters escaped), to read the program's labels by."""
    form = form or C_INPUTS["image"]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    labels = np.asarray(support_labels).reshape(-1)
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ConfigError("raw task files: support labels must be 0..255 (one byte each, as the C example reads)")
    support = np.frombuffer(form.to_bytes(support_inputs), np.uint8).reshape(len(labels), -1)
    records = np.concatenate([labels.astype(np.uint8)[:, None], support], axis=1)
    atomic_write_bytes(folder / "support.bin", records.tobytes())
    atomic_write_bytes(folder / "query.bin", form.to_bytes(query_inputs))
    if classes is not None:
        lines = "".join(_CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(c)) + "\n"
                        for c in classes)
        atomic_write_bytes(folder / "classes.txt", lines.encode("utf-8", "backslashreplace"))
    return folder / "support.bin", folder / "query.bin"
