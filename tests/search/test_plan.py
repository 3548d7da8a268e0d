import pytest
import torch

from fewbit.compress import compress
from fewbit.errors import ConfigError
from fewbit.models import build_backbone
from fewbit.search.plan import LayerOption, option_grid, plan_spec


def test_option_grid_counts_dense_options_once():
    grid = option_grid((2, 4), (0.0, 0.5), ("unstructured", "channel"))
    assert len(grid) == 2 * (1 + 2)
    assert LayerOption(4, 0.5, "channel").label == "w4 c50%" and LayerOption(2).label == "w2"


def test_plan_spec_compresses_each_layer_as_planned():
    torch.manual_seed(0)
    model = build_backbone("conv4", ways=5, input_shape=(1, 28, 28))
    plan = {"features.0.0": LayerOption(8), "features.1.0": LayerOption(2, 0.5),
            "features.2.0": LayerOption(2, 0.5), "features.3.0": LayerOption(4, 0.25, "channel")}
    spec = plan_spec(plan, act_bits=8)
    assert spec == ("prune:0.5@features.1.0|features.2.0,prune:channel:0.25@features.3.0,"
                    "quant:w8a8@features.0.0,quant:w2a8@features.1.0|features.2.0,quant:w4a8@features.3.0")
    c = compress(model, spec)
    for name, option in plan.items():
        layer = c.get_submodule(name)
        assert layer.cq_weight.bits == option.bits and layer.cq_act.bits == 8
        weight = layer.compress_weight(layer.weight)
        zero = float((weight == 0).float().mean())
        if option.pattern == "channel":
            rows = (weight.flatten(1) == 0).all(1).float().mean()
            assert float(rows) == pytest.approx(option.sparsity, abs=1 / 64)
        else:
            assert zero == pytest.approx(option.sparsity, abs=0.01)
    assert not hasattr(c.head, "cq_weight")  # only the planned layers


def test_plan_spec_with_lsq_and_float_activations():
    spec = plan_spec({"a": LayerOption(3)}, act_bits=None, lsq=True)
    assert spec == "quant:w3:lsq@a"


@pytest.mark.parametrize("bad", [{"features.*": LayerOption(4)}, {"a,b": LayerOption(4)}, {}])
def test_plan_spec_refuses_what_a_spec_cannot_name(bad):
    with pytest.raises(ConfigError):
        plan_spec(bad)


@pytest.mark.parametrize("kwargs", [{"bits": 0}, {"bits": 9}, {"bits": 4, "sparsity": 1.0},
                                    {"bits": 4, "sparsity": 0.5, "pattern": "nm"}])
def test_layer_option_validates(kwargs):
    with pytest.raises(ConfigError):
        LayerOption(**kwargs)
