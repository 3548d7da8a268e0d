import torch
import torch.nn.functional as F

from fewbit.data.task import Task
from fewbit.meta import build_algorithm
from fewbit.models import build_backbone
from fewbit.search.plan import LayerOption
from fewbit.search.sensitivity import loss_increase, query_loss
from fewbit.search.sizing import ArtifactSizer


def _tasks(n: int = 3, ways: int = 3, shots: int = 2, queries: int = 3) -> list[Task]:
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        means = torch.randn(ways, 1, 12, 12, generator=g)  # one pattern a class, noisy draws
        sy = torch.arange(ways).repeat_interleave(shots)
        qy = torch.arange(ways).repeat_interleave(queries)
        sx = means[sy] + 0.3 * torch.randn(len(sy), 1, 12, 12, generator=g)
        qx = means[qy] + 0.3 * torch.randn(len(qy), 1, 12, 12, generator=g)
        out.append(Task(sx[None], sy[None], qx[None], qy[None], ways))
    return out


def test_query_loss_is_the_mean_query_cross_entropy():
    torch.manual_seed(0)
    model = build_backbone("mlp", ways=3, in_features=144)
    algo = build_algorithm("protonet", model=model)
    tasks = _tasks()
    want = torch.stack([F.cross_entropy(algo.predict(model, dict(model.named_parameters()), t)[0], t.query_y[0])
                        for t in tasks]).mean()
    assert abs(query_loss(model, algo, tasks, {}) - float(want)) < 1e-5


def test_a_harsher_option_costs_more_loss_and_the_float_option_nothing():
    torch.manual_seed(0)
    model = build_backbone("mlp", ways=3, in_features=144)
    sizer = ArtifactSizer(model, act_bits=None)
    options = [LayerOption(8), LayerOption(1, 0.9)]
    layer = "features.1"
    assert layer in dict(model.named_modules())
    deltas = loss_increase(sizer.compressed, model, {layer: options}, lambda m: build_algorithm("protonet", model=m),
                           _tasks(), {})
    gentle, harsh = deltas[layer]
    assert abs(gentle) < 0.02 < abs(harsh)


def test_the_fisher_estimate_orders_options_as_measured():
    from fewbit.search.sensitivity import fisher_increase

    torch.manual_seed(0)
    model = build_backbone("mlp", ways=3, in_features=144)
    sizer = ArtifactSizer(model, act_bits=None)
    options = [LayerOption(8), LayerOption(4), LayerOption(2, 0.5), LayerOption(1, 0.9)]
    layers = {"features.1": options}
    algo = build_algorithm("protonet", model=model)
    estimated = fisher_increase(sizer.compressed, model, layers, algo, _tasks(), {})["features.1"]
    measured = loss_increase(sizer.compressed, model, layers, lambda m: build_algorithm("protonet", model=m),
                             _tasks(), {})["features.1"]
    assert abs(estimated[0]) < 0.01  # 8 bits barely move the weights
    assert estimated[-1] == max(estimated) and measured[-1] == max(measured)  # both rank the harshest last
    assert estimated[-1] > 10 * abs(estimated[0])


def test_fisher_needs_an_episodic_algorithm():
    import pytest

    from fewbit.errors import ConfigError
    from fewbit.search import SearchConfig

    with pytest.raises(ConfigError, match="SearchConfig.sensitivity: fisher needs"):
        SearchConfig.from_dict({"budget": "24K", "sensitivity": "fisher",
                                "train": {"dataset": "glyphs", "algorithm": "finetune"}})
