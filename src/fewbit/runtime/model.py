"""RuntimeModel: an artifact's network in numpy, as a function of a params dict."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from fewbit.artifact.format import Artifact, decode_artifact, read_artifact
from fewbit.artifact.tensor import PackedTensor
from fewbit.errors import FewbitFormatError
from fewbit.runtime.ops import OPS, Linear, Op, Params, conv_block

MAX_IMAGE_SIDE = 512


class RuntimeModel:
    """An artifact ready to run: `embed`, `logits`, `predict`, and the pieces adaptation needs.

    Inputs are float32 `[N, C, H, W]` already preprocessed (see `fewbit.runtime.images`), the
    same layout PyTorch uses. `params` holds every float tensor (biases, norms, a float head);
    quantized weights stay as integer codes inside the ops and are never trained.
    """

    def __init__(self, artifact: Artifact) -> None:
        manifest = artifact.manifest
        self.manifest = manifest
        self.nbytes = artifact.nbytes
        arch = manifest["architecture"]
        self.arch_name = str(arch.get("name", "?"))
        self.input_shape = tuple(int(d) for d in arch["input_shape"])
        self.embedding_layers = int(arch["embedding_layers"])
        specs = arch["layers"]
        if len(self.input_shape) != 3 or not all(1 <= d <= MAX_IMAGE_SIDE for d in self.input_shape):
            raise FewbitFormatError(f"malformed manifest: input_shape {list(self.input_shape)}")
        if not 0 < self.embedding_layers <= len(specs):
            raise FewbitFormatError(f"malformed manifest: embedding_layers={self.embedding_layers}")
        self.layers: list[Op] = []
        for i, spec in enumerate(specs):
            op = OPS.get(spec.get("op"))
            if op is None:
                raise FewbitFormatError(
                    f"artifact layer {i} has op {spec.get('op')!r}, which this runtime lacks"
                )
            try:
                self.layers.append(op(spec, artifact.tensors))
            except (KeyError, ValueError, TypeError) as exc:
                raise FewbitFormatError(f"artifact layer {i} ({spec.get('op')}): {exc}") from None
        kinds = [op.kind for op in self.layers]
        block = ["conv2d", "batchnorm", "relu", "maxpool2d"]
        self._fusable = [kinds[i : i + 4] == block for i in range(len(self.layers))]
        self.params: Params = {
            name: t
            for name, t in artifact.tensors.items()
            if isinstance(t, np.ndarray) and not _is_weight(name, specs)
        }
        # Only the head's stored weight is kept here (adaptation starts from it); the body's
        # weights live in the ops, in their compressed form.
        head_weight = self.head_weight_name()
        self.tensors = {n: t for n, t in artifact.tensors.items() if n == head_weight}
        self.algorithm = str(manifest.get("algorithm", "protonet"))
        self.adaptation: dict[str, Any] = dict(manifest.get("adaptation") or {})
        self.preprocessing: dict[str, Any] = dict(manifest["preprocessing"])
        head = self.layers[self.embedding_layers :]
        self.ways = head[-1].out_features if head and isinstance(head[-1], Linear) else 0
        # Shapes are checked symbolically, layer by layer: a manifest whose shapes do not chain
        # fails here, and loading costs no compute whatever the architecture claims.
        c, h, w = self.input_shape
        shape: tuple[int, ...] = (h, w, c)
        try:
            for i, op in enumerate(self.layers):
                shape = op.out_shape(shape, self.params)
                if i + 1 == self.embedding_layers:
                    if len(shape) != 1:
                        raise ValueError(f"the embedding must be flat, got {list(shape)}")
                    self.embedding_dim = shape[0]
        except (ValueError, KeyError) as exc:
            raise FewbitFormatError(f"artifact architecture does not fit together: {exc}") from None

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
        """Check a `[N, C, H, W]` batch against the artifact's input shape and make it NHWC float32."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"expected input [N, {', '.join(map(str, self.input_shape))}], got {list(x.shape)}"
            )
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1))

    def embed(self, x: np.ndarray, params: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """Embeddings `[N, D]` of a batch `[N, C, H, W]` (batch statistics come from this batch)."""
        return self.run_layers(self.to_nhwc(x), params, 0, self.embedding_layers)

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
        return head[-1].weight_name if head and isinstance(head[-1], Linear) else None

    def float_tensor(self, name: str) -> np.ndarray:
        """A stored tensor as float32 (dequantized when quantized)."""
        t = self.tensors[name]
        return t.dequantize() if isinstance(t, PackedTensor) else np.array(t, dtype=np.float32)


def _is_weight(name: str, specs: list[dict[str, Any]]) -> bool:
    return any(s.get("weight") == name and s.get("op") in ("conv2d", "linear") for s in specs)


def load(source: str | os.PathLike[str] | bytes) -> RuntimeModel:
    """Load an artifact (a path or its bytes) into a RuntimeModel; FewbitFormatError when unsound."""
    artifact = decode_artifact(source) if isinstance(source, (bytes, bytearray)) else read_artifact(source)
    try:
        return RuntimeModel(artifact)
    except FewbitFormatError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise FewbitFormatError(f"malformed manifest ({type(exc).__name__}: {exc})") from None
