"""RuntimeModel: an artifact's network in numpy, as a function of a params dict."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from fewbit._io import read_regular_file
from fewbit.artifact.format import MAX_FILE_BYTES, Artifact, decode_artifact
from fewbit.artifact.tensor import PackedTensor
from fewbit.errors import FewbitFormatError, NumericError
from fewbit.pretrained import is_model_name, model_path
from fewbit.runtime import limits
from fewbit.runtime.limits import MAX_IMAGE_SIDE  # noqa: F401  (re-exported: where it used to live)
from fewbit.runtime.ops import OPS, LinearOp, Op, Params, conv_block, walk_specs
from fewbit.runtime.preprocess import Preprocessing, preprocessing_from_dict
from fewbit.runtime.settings import settings_for


class RuntimeModel:
    """An artifact ready to run: `embed`, `logits`, `predict`, and the pieces adaptation needs.

    Inputs are float32 `[N, C, H, W]` already preprocessed (see `fewbit.runtime.images`), the
    same layout PyTorch uses, or `[N, F]` standardised rows for a table model (`prep` is the
    artifact's preprocessing: `fewbit.runtime.preprocess`). `params` holds every float tensor
    (biases, norms, a float head); quantized weights stay as integer codes inside the ops and are
    never trained.
    """

    def __init__(self, artifact: Artifact) -> None:
        manifest = artifact.manifest
        limits.check_manifest(manifest)  # sizes, preprocessing and adaptation within the documented limits
        self.manifest = manifest
        self.nbytes = artifact.nbytes
        arch = manifest["architecture"]
        self.arch_name = str(arch.get("name", "?"))
        self.input_shape = tuple(int(d) for d in arch["input_shape"])
        self.embedding_layers = int(arch["embedding_layers"])
        specs = arch["layers"]
        self.layers: list[Op] = []
        for i, spec in enumerate(specs):
            op = OPS.get(spec.get("op"))
            if op is None:
                raise FewbitFormatError(
                    f"artifact layer {i} has op {spec.get('op')!r}, which this runtime lacks"
                )
            try:
                self.layers.append(op(spec, artifact.tensors))
            except KeyError as exc:
                raise FewbitFormatError(
                    f"artifact layer {i} ({spec.get('op')}) needs an entry or tensor it lacks ({exc.args[0]!r})"
                ) from None
            except (ValueError, TypeError) as exc:
                raise FewbitFormatError(f"artifact layer {i} ({spec.get('op')}): {exc}") from None
        kinds = [op.kind for op in self.layers]
        block = ["conv2d", "batchnorm", "relu", "maxpool2d"]
        self._fusable = [kinds[i : i + 4] == block for i in range(len(self.layers))]
        weights = {s.get("weight") for s in walk_specs(specs) if s.get("op") in ("conv2d", "linear")}
        self.adaptation: dict[str, Any] = dict(manifest.get("adaptation") or {})
        rate_names = self.adaptation.get("lr_tensors") or {}
        step_names = self.adaptation.get("lr_step_tensors") or {}
        for key, table in (("lr_tensors", rate_names), ("lr_step_tensors", step_names)):
            if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
                raise FewbitFormatError(f"malformed manifest: adaptation.{key} must map parameters to tensors")
        rate_tensors = set(rate_names.values()) | set(step_names.values())
        self.params: Params = {
            name: t for name, t in artifact.tensors.items()
            if isinstance(t, np.ndarray) and name not in weights and name not in rate_tensors
        }
        # Only the head's stored weight is kept here (adaptation starts from it); the body's
        # weights live in the ops, in their compressed form.
        head_weight = self.head_weight_name()
        self.tensors = {n: t for n, t in artifact.tensors.items() if n == head_weight}
        self.rates = self._learned_rates(rate_names, artifact.tensors)
        self.step_rates = self._learned_rates(step_names, artifact.tensors, per_step=True)
        self.algorithm = str(manifest.get("algorithm", ""))  # what trained it (a name, for people)
        self.preprocessing: dict[str, Any] = dict(manifest["preprocessing"])
        try:
            self.prep: Preprocessing = preprocessing_from_dict(self.preprocessing)
        except ValueError as exc:
            raise FewbitFormatError(f"malformed manifest: {exc}") from None
        if tuple(self.prep.input_shape) != self.input_shape:
            raise FewbitFormatError(
                f"malformed manifest: preprocessing gives inputs {list(self.prep.input_shape)}, "
                f"the architecture takes {list(self.input_shape)}"
            )
        head = self.layers[self.embedding_layers :]
        self.ways = head[-1].out_features if head and isinstance(head[-1], LinearOp) else 0
        # Shapes are checked symbolically, layer by layer: a manifest whose shapes do not chain
        # fails here, and loading costs no compute whatever the architecture claims.
        shape: tuple[int, ...] = self.input_shape
        if len(shape) == 3:  # the runtime's images are NHWC
            c, h, w = shape
            shape = (h, w, c)
        first = shape
        shapes: list[tuple[int, ...]] = []
        try:
            for i, op in enumerate(self.layers):
                shape = op.out_shape(shape, self.params)
                shapes.append(shape)
                if i + 1 == self.embedding_layers:
                    if len(shape) != 1:
                        raise ValueError(f"the embedding must be flat, got {list(shape)}")
                    self.embedding_dim = shape[0]
        except (ValueError, KeyError) as exc:
            raise FewbitFormatError(f"artifact architecture does not fit together: {exc}") from None
        # What one image costs, from the shapes alone: a batch over the budget is refused before it runs.
        self.cost = limits.image_cost(self.layers, first, shapes)

    def _learned_rates(
        self, names: Mapping[str, str], tensors: Mapping[str, Any], per_step: bool = False
    ) -> dict[str, np.ndarray]:
        """Learned learning rates: per parameter entry (Meta-SGD's, each the shape of the parameter it
        steps) or, `per_step`, one per inner step (MAML++'s LSLR, a vector of at most 10,000)."""
        rates = {}
        for param, tensor in names.items():
            rate = tensors.get(tensor)
            target = self.params.get(param)
            if target is None and param in self.tensors:
                target = self.float_tensor(param)
            shape_ok = isinstance(rate, np.ndarray) and target is not None and (
                rate.ndim == 1 and 1 <= rate.size <= 10_000 if per_step else rate.shape == target.shape)
            if not shape_ok:
                raise FewbitFormatError(f"malformed manifest: learned rate {tensor!r} does not fit parameter {param!r}")
            if not (np.all(np.isfinite(rate)) and np.all(np.abs(rate) <= 1e6)):
                raise FewbitFormatError(f"artifact learned rate {tensor!r} holds values beyond [-1e6, 1e6]")
            rates[param] = rate.astype(np.float32)
        return rates

    # ----------------------------------------------------------------------------------- forward

    def run_layers(
        self,
        x: np.ndarray,
        params: Mapping[str, np.ndarray] | None,
        start: int,
        stop: int,
        ctxs: list[dict[str, Any]] | None = None,
    ) -> np.ndarray:
        """Layers `start:stop` on `x` (NHWC or `[N, D]`); with `ctxs`, keep what backward needs."""
        p = self.params if params is None else params
        i = start
        while i < stop:
            op = self.layers[i]
            if ctxs is None and i + 4 <= stop and self._fusable[i]:
                x = conv_block(op, self.layers[i + 1], self.layers[i + 3], p, x)  # type: ignore[arg-type]
                i += 4
                continue
            ctx: dict[str, Any] | None = {} if ctxs is not None else None
            x = op.forward(p, x, ctx)  # type: ignore[arg-type]
            if ctxs is not None:
                ctxs.append(ctx)  # type: ignore[arg-type]
            i += 1
        return x

    def to_nhwc(self, x: np.ndarray) -> np.ndarray:
        """Check a `[N, C, H, W]` (or `[N, F]`) batch against the artifact's input shape and make it
        the runtime's layout (NHWC float32; a table's rows stay as they are)."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 1 + len(self.input_shape) or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"expected input [N, {', '.join(map(str, self.input_shape))}], got {list(x.shape)}"
            )
        if x.ndim == 2:
            return np.ascontiguousarray(x)
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1))

    def embed(self, x: np.ndarray, params: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """Embeddings `[N, D]` of a batch `[N, C, H, W]` (batch statistics come from this batch).

        LimitError when the batch would need more memory than `limits.MAX_BATCH_BYTES`;
        NumericError when the network's values overflow on it.
        """
        limits.check_batch(self.cost, len(x))
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # checked just below
            z = self.run_layers(self.to_nhwc(x), params, 0, self.embedding_layers)
        if not np.all(np.isfinite(z)):
            raise NumericError(
                "the network's values overflow to NaN or infinity on this input; its outputs would be meaningless"
            )
        return z

    def head(self, z: np.ndarray, params: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """The head's logits for embeddings `[N, D]`."""
        if self.embedding_layers == len(self.layers):
            raise ValueError("this artifact has no classification head (ProtoNet); adapt it to a support set")
        return self.run_layers(z, params, self.embedding_layers, len(self.layers))

    def logits(self, x: np.ndarray, params: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """Logits `[N, ways]` of the artifact's own head."""
        return self.head(self.embed(x, params), params)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class indices `[N]` from the artifact's own head."""
        return self.logits(x).argmax(axis=1)

    def head_weight_name(self) -> str | None:
        """Name of the head's weight tensor, or None without a head."""
        head = self.layers[self.embedding_layers :]
        return head[-1].weight_name if head and isinstance(head[-1], LinearOp) else None

    def float_tensor(self, name: str) -> np.ndarray:
        """A stored tensor as float32 (dequantized when quantized)."""
        t = self.tensors[name]
        return t.dequantize() if isinstance(t, PackedTensor) else np.array(t, dtype=np.float32)


def load(source: str | os.PathLike[str] | bytes) -> RuntimeModel:
    """Load an artifact (a path, its bytes, or the name of a model shipped with fewbit: `fewbit
    models`) into a RuntimeModel; FewbitFormatError when unsound or beyond the limits of
    `fewbit.runtime.limits`.

        model = fewbit.runtime.load("model.fewbit")
        labels = fewbit.runtime.adapt(model, support_x, support_y).predict(query_x)
    """
    if isinstance(source, (bytes, bytearray)):
        artifact = decode_artifact(source)
    else:
        if isinstance(source, str) and not os.path.exists(source) and is_model_name(source):
            source = str(model_path(source))  # a model shipped with fewbit, by name
        artifact = decode_artifact(read_artifact_file(source), where=str(source))
    try:
        model = RuntimeModel(artifact)
    except FewbitFormatError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise FewbitFormatError(f"malformed manifest ({type(exc).__name__}: {exc})") from None
    try:
        settings_for(model)  # the artifact's own adaptation block must be one the runtime can follow
    except ValueError as exc:
        raise FewbitFormatError(f"artifact adaptation block: {exc}") from None
    return model


def read_artifact_file(path: str | os.PathLike[str]) -> bytes:
    """The bytes of the artifact file at `path`: a regular file of at most MAX_FILE_BYTES (a FIFO
    or a device such as /dev/zero is refused before it is read)."""
    try:
        return read_regular_file(path, MAX_FILE_BYTES, "artifact")
    except FileNotFoundError:
        raise FewbitFormatError(f"{path}: no such file") from None
    except ValueError as exc:
        raise FewbitFormatError(str(exc)) from None
    except OSError as exc:
        raise FewbitFormatError(f"{path}: cannot read ({exc.strerror or exc})") from None
