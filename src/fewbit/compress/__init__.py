"""Compression: quantize, cluster, prune, slim, distill; the spec; packed containers; size accounting.

Two phases, as in torchao's QAT: `compress_(model, spec)` swaps layers for fake-compressed
ones that train (and adapt in an inner loop) with compression active; `convert(model)` turns
them into packed containers that export stores. `size_report` counts the stored bytes.

    from fewbit.compress import compress_, convert, size_report
    compress_(model, "prune:0.5,quant:w4a8")
    ...train...
    print(size_report(model).to_dict()["bytes"])
"""

from fewbit.compress.api import calibrate, compress, compress_, compressed_names, observing, project_params
from fewbit.compress.cluster import ClusterConfig
from fewbit.compress.convert import PackedAct, PackedLayer, PackedTensor, convert, pack_layer, packed_layers
from fewbit.compress.distill import distill, feature_loss, kd_loss
from fewbit.compress.layers import CompressedBatchNorm, CompressedConv2d, CompressedLinear, compressed_layers
from fewbit.compress.prune import PruneConfig, apply_masks_, update_pruning
from fewbit.compress.quantize import QuantConfig
from fewbit.compress.registry import register_method
from fewbit.compress.size import LayerSize, SizeReport, size_report
from fewbit.compress.slim import slim
from fewbit.compress.spec import Spec, load_spec, parse_spec, spec_from_list, spec_to_list

__all__ = [
    "ClusterConfig",
    "CompressedBatchNorm",
    "CompressedConv2d",
    "CompressedLinear",
    "LayerSize",
    "PackedAct",
    "PackedLayer",
    "PackedTensor",
    "PruneConfig",
    "QuantConfig",
    "SizeReport",
    "Spec",
    "apply_masks_",
    "calibrate",
    "compress",
    "compress_",
    "compressed_layers",
    "compressed_names",
    "convert",
    "distill",
    "feature_loss",
    "kd_loss",
    "load_spec",
    "observing",
    "pack_layer",
    "packed_layers",
    "parse_spec",
    "project_params",
    "register_method",
    "size_report",
    "slim",
    "spec_from_list",
    "spec_to_list",
    "update_pruning",
]
