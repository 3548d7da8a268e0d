"""The `.fewbit` artifact, torch-free: the file format, bit packing and the packed tensor.

    from fewbit.artifact import PackedTensor, read_artifact
    art = read_artifact("model.fewbit")            # manifest + tensors, verified
    w = art.tensors["features.0.0.weight"]         # a PackedTensor (or a float32 array)
    w.dequantize(), w.integer_weights(), w.mask    # the float values, the integer grid, the keep-mask

Everything here needs numpy only, so compress (which builds packed tensors), deploy (which
writes them) and the runtime (which reads them) share one description of a stored model.
"""

from fewbit.artifact.format import FORMAT_VERSION, Artifact, Tensor, decode_artifact, read_artifact, write_artifact
from fewbit.artifact.tensor import PackedTensor

__all__ = [
    "FORMAT_VERSION",
    "Artifact",
    "PackedTensor",
    "Tensor",
    "decode_artifact",
    "read_artifact",
    "write_artifact",
]
