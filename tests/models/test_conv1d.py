"""The 1-D Conv-4 for signals: shapes, what a kernel sees, gradients, compression inside the inner loop."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from fewbit.errors import ConfigError
from fewbit.models import build_backbone


def test_conv1d_convolves_over_time_only_and_pools_each_channel_row() -> None:
    torch.manual_seed(0)
    model = build_backbone("conv1d", ways=4, input_shape=(3, 1, 64))
    x = torch.randn(5, 3, 1, 64)
    assert model(x).shape == (5, 4) and model(x, embed=True).shape == (5, 64 * 64 // 16)
    first = model.features[0][0]
    assert tuple(first.kernel_size) == (1, 3) and tuple(first.padding) == (0, 1)
    # a step's value reaches only its neighbours in time: the first conv of a one-hot series is local
    probe = torch.zeros(1, 3, 1, 64)
    probe[0, 1, 0, 30] = 1.0
    out = first(probe) - first(torch.zeros_like(probe))
    assert out[0, :, 0, :29].abs().max() == 0 and out[0, :, 0, 32:].abs().max() == 0
    assert out[0, :, 0, 29:32].abs().max() > 0


def test_conv1d_refuses_what_it_cannot_take() -> None:
    with pytest.raises(ConfigError, match="conv1d takes series C x 1 x L"):
        build_backbone("conv1d", ways=5, input_shape=(3, 28, 28))
    with pytest.raises(ConfigError, match="pooled away"):
        build_backbone("conv1d", ways=5, input_shape=(1, 1, 8))
    with pytest.raises(ConfigError, match="conv4 takes square images .* use the conv1d backbone"):
        build_backbone("conv4", ways=5, input_shape=(3, 1, 128))


def test_conv1d_gradients_match_finite_differences() -> None:
    torch.manual_seed(1)
    model = build_backbone("conv1d", ways=3, input_shape=(2, 1, 32), width=4).double()
    x = torch.randn(6, 2, 1, 32, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    params = {n: p.detach().clone().requires_grad_() for n, p in model.named_parameters()}

    def loss(ps: dict) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(functional_call(model, ps, (x,)), y)

    grads = torch.autograd.grad(loss(params), list(params.values()))
    for (name, p), g in zip(params.items(), grads):
        flat = p.detach().reshape(-1)
        for i in range(min(3, flat.numel())):
            bumped = {k: v.detach().clone() for k, v in params.items()}
            eps = 1e-6
            bumped[name].view(-1)[i] += eps
            up = loss(bumped)
            bumped[name].view(-1)[i] -= 2 * eps
            down = loss(bumped)
            assert float((up - down) / (2 * eps)) == pytest.approx(float(g.reshape(-1)[i]), rel=1e-4, abs=1e-7), name


@pytest.mark.parametrize("spec", ["quant:w4a8:lsq", "quant:w2a8", "prune:2:4@features.[123].*,quant:w4a8", "cluster:16",
                                  "prune:channel:0.5"])
def test_compressed_conv1d_adapts_in_the_inner_loop_as_it_ships(spec: str) -> None:
    """MAML's fast weights of a compressed conv1d stay on the grid, inside the masks, on the codebook."""
    from fewbit.compress import compress_, compressed_layers, project_params
    from fewbit.data.task import Task
    from fewbit.meta import build_algorithm, meta_config

    torch.manual_seed(2)
    model = build_backbone("conv1d", ways=3, input_shape=(2, 1, 32), width=8)
    compress_(model, spec)
    assert compressed_layers(model)
    algo = build_algorithm(meta_config("maml", inner_steps=2, inner_lr=0.1), model=model)
    x = torch.randn(2, 6, 2, 1, 32)
    y = torch.tensor([0, 0, 1, 1, 2, 2]).expand(2, -1)
    task = Task(x, y, x, y, ways=3)
    params = dict(model.named_parameters())
    out = algo.step(model, params, task)
    out.loss.backward()
    weights = [n for n, p in model.named_parameters() if n.endswith(("weight", "bias")) and p.requires_grad]
    assert torch.isfinite(out.loss) and all(dict(model.named_parameters())[n].grad is not None for n in weights)
    projected = project_params(model, {n: p.detach() for n, p in params.items()})
    again = project_params(model, projected)
    for n in projected:  # projection is idempotent: fast weights live on the shipped grid
        torch.testing.assert_close(again[n], projected[n])
