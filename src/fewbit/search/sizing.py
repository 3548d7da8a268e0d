"""Exact bytes of a plan: the `.fewbit` file it exports to, packed in memory.

The byte model is the export itself: `plan_bytes` compresses a copy of the model with the plan's
spec and encodes the whole artifact (header, deflated manifest, codes, scales, masks, float
tensors) with the same `artifact_from_model` and `encode_artifact` that `export` writes, so it
equals the file's size for the weights it is given; a Conv-4 packs in about 10 ms.

For the knapsack the bytes are split into a per-layer part and the rest. The payload is a
concatenation of tensors, and a layer's option changes only its own tensors (and, pruned by
channel, the BatchNorm after it), so `layer_cost` (the payload with one layer at an option, minus
the payload with that layer in float32) adds up exactly over layers. Only the deflated manifest
does not add up; the search takes it from a reference plan, keeps a margin, and checks every plan
it reports with `plan_bytes`.
"""

from __future__ import annotations

import copy
import struct
from collections.abc import Mapping
from typing import Any

from torch import nn

from fewbit.artifact.format import HEADER_BYTES, encode_artifact
from fewbit.compress import compress_
from fewbit.compress.layers import compressible
from fewbit.deploy.torch_export import artifact_from_model
from fewbit.search.plan import LayerOption, Plan, plan_spec


class ArtifactSizer:
    """Bytes of `model` (float, uncompressed) exported under a plan, with fixed export arguments.

    `export_args` are `artifact_from_model`'s keywords (algorithm, extras, preprocessing, ...): the
    same ones the final export uses, since the manifest records them.
    """

    def __init__(self, model: nn.Module, *, act_bits: int | None = 8, lsq: bool = False, step: int | None = None,
                 **export_args: Any) -> None:
        self.model, self.act_bits, self.lsq, self.export_args = model, act_bits, lsq, export_args
        self.step = step
        self._float_payload: int | None = None
        self._cost: dict[tuple[str, LayerOption], int] = {}

    def layers(self) -> list[str]:
        """The compressible layers the artifact stores (a ProtoNet artifact ships no head)."""
        _, tensors = artifact_from_model(self.model, **self.export_args)
        return [n for n, m in self.model.named_modules() if n and compressible(m) and f"{n}.weight" in tensors]

    def compressed(self, plan: Plan) -> nn.Module:
        """A compressed copy of the model under `plan`."""
        return compress_(copy.deepcopy(self.model), self.spec(plan))

    def spec(self, plan: Plan) -> str:
        """`plan` as a compression spec string."""
        return plan_spec(plan, act_bits=self.act_bits, lsq=self.lsq)

    def encode(self, model: nn.Module, spec: str | None = None) -> bytes:
        """The artifact of `model`, as `export` would write it; with `step`, its manifest names the
        step and `spec` as `fewbit export RUN` does for a run trained to that step with that spec."""
        args = dict(self.export_args)
        if self.step is not None:
            args["extra"] = {"step": self.step, "compress": spec}
        manifest, tensors = artifact_from_model(model, **args)
        return encode_artifact(manifest, tensors)

    def plan_bytes(self, plan: Plan) -> int:
        """The exact size of the `.fewbit` file `plan` exports to (these weights)."""
        return len(self.encode(self.compressed(plan), self.spec(plan)))

    @property
    def float_payload(self) -> int:
        """The payload of the float model's artifact."""
        if self._float_payload is None:
            self._float_payload = self.payload_bytes(self.model)
        return self._float_payload

    def payload_bytes(self, model: nn.Module) -> int:
        """The payload part of `model`'s artifact (what follows the header and the manifest)."""
        data = self.encode(model)
        (manifest_length,) = struct.unpack_from("<I", data, 12)
        return len(data) - HEADER_BYTES - manifest_length

    def overhead(self, plan: Plan) -> int:
        """Header + deflated manifest of `plan`'s artifact: what `layer_cost` leaves out."""
        model = self.compressed(plan)
        return len(self.encode(model, self.spec(plan))) - self.payload_bytes(model)

    def layer_cost(self, layer: str, option: LayerOption) -> int:
        """Payload bytes `layer` takes at `option`, counted so that a plan's payload is the float
        model's payload minus every layer's float bytes plus these (see the module docstring)."""
        key = (layer, option)
        if key not in self._cost:
            alone = self.payload_bytes(self.compressed({layer: option}))
            self._cost[key] = alone - self.float_payload
        return self._cost[key]

    def estimate(self, plan: Plan, overhead: int) -> int:
        """`overhead` + the payload from per-layer costs: exact up to the manifest's deflation."""
        return overhead + self.float_payload + sum(self.layer_cost(n, o) for n, o in plan.items())


def cost_table(sizer: ArtifactSizer, options: Mapping[str, list[LayerOption]]) -> dict[str, list[int]]:
    """`layer -> [payload cost of each option]` (see `ArtifactSizer.layer_cost`)."""
    return {layer: [sizer.layer_cost(layer, o) for o in opts] for layer, opts in options.items()}
