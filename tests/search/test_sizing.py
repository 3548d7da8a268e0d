"""The byte model equals the exported file's size, plan for plan."""

import random

import pytest
import torch

from fewbit.compress import compress
from fewbit.deploy import export
from fewbit.models import build_backbone
from fewbit.search.plan import option_grid
from fewbit.search.sizing import ArtifactSizer

OPTIONS = option_grid((1, 2, 3, 4, 8), (0.0, 0.25, 0.5, 0.75, 0.9), ("unstructured", "channel"))


@pytest.fixture(scope="module")
def conv4():
    torch.manual_seed(0)
    return build_backbone("conv4", ways=5, input_shape=(1, 28, 28))


@pytest.mark.parametrize("algorithm", ["protonet", "anil"])
def test_plan_bytes_equal_the_exported_file_on_random_plans(tmp_path, conv4, algorithm):
    sizer = ArtifactSizer(conv4, act_bits=8, step=300, algorithm=algorithm)
    layers = sizer.layers()
    assert layers == ["features.0.0", "features.1.0", "features.2.0", "features.3.0"] + (
        ["head"] if algorithm == "anil" else [])  # a ProtoNet artifact ships no head
    rng = random.Random(algorithm)
    for i in range(12):
        plan = {layer: rng.choice(OPTIONS) for layer in layers}
        spec = sizer.spec(plan)
        info = export(compress(conv4, spec), tmp_path / f"{i}.fewbit", algorithm=algorithm,
                      extra={"step": 300, "compress": spec})
        assert sizer.plan_bytes(plan) == info["bytes"] == (tmp_path / f"{i}.fewbit").stat().st_size


def test_layer_costs_add_up_to_the_payload_exactly(conv4):
    sizer = ArtifactSizer(conv4, act_bits=8, step=300, algorithm="protonet")
    layers = sizer.layers()
    rng = random.Random(1)
    for _ in range(10):
        plan = {layer: rng.choice(OPTIONS) for layer in layers}
        # the plan's own header and manifest + additive payload costs = the exact size
        assert sizer.estimate(plan, sizer.overhead(plan)) == sizer.plan_bytes(plan)


def test_an_mlp_plan_with_a_float_activation_side(tmp_path):
    torch.manual_seed(1)
    mlp = build_backbone("mlp", ways=4, in_features=784)  # flattened 28 x 28 images
    sizer = ArtifactSizer(mlp, act_bits=None, algorithm="protonet")
    layers = sizer.layers()
    assert layers
    plan = {layer: OPTIONS[3 * i % len(OPTIONS)] for i, layer in enumerate(layers)}
    info = export(compress(mlp, sizer.spec(plan)), tmp_path / "m.fewbit", algorithm="protonet")
    assert sizer.plan_bytes(plan) == info["bytes"]
