import pytest
import torch
from torch.func import functional_call, vmap

from fewbit.errors import ConfigError
from fewbit.models import build_backbone
from fewbit.models.layers import BatchNorm


@pytest.mark.parametrize("name,feat", [("mlp", 64), ("conv4", 64), ("resnet12", 256)])
def test_shapes_and_functional_call(name, feat):
    torch.manual_seed(0)
    m = build_backbone(name, ways=5)
    x = torch.randn(6, 1, 28, 28)
    assert m(x).shape == (6, 5)
    assert m(x, embed=True).shape == (6, feat)
    params = {k: v.detach().clone() for k, v in m.named_parameters()}
    torch.testing.assert_close(functional_call(m, params, (x,)), m(x))
    params["head.bias"] = params["head.bias"] + 1.0
    torch.testing.assert_close(functional_call(m, params, (x,)), m(x) + 1.0)


def test_conv4_is_about_450kb_in_float32():
    m = build_backbone("conv4", ways=5)
    assert 4 * sum(p.numel() for p in m.parameters()) == pytest.approx(449_044, rel=0.01)


def test_vmap_over_tasks_matches_loop():
    torch.manual_seed(0)
    m = build_backbone("conv4", ways=3)
    params = dict(m.named_parameters())
    x = torch.randn(4, 5, 1, 28, 28)  # [tasks, batch, C, H, W]
    batched = vmap(lambda xi: functional_call(m, params, (xi,)))(x)
    looped = torch.stack([m(xi) for xi in x])
    torch.testing.assert_close(batched, looped, atol=1e-5, rtol=1e-5)


def test_batchnorm_uses_batch_statistics_and_has_no_buffers():
    bn = BatchNorm(3)
    x = torch.randn(8, 3, 5, 5) * 4 + 2
    y = bn(x)
    assert list(bn.buffers()) == []
    torch.testing.assert_close(y.mean((0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var((0, 2, 3), unbiased=False), torch.ones(3), atol=1e-3, rtol=0)
    ref = torch.nn.functional.batch_norm(x, None, None, bn.weight, bn.bias, training=True)
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)


def test_unknown_backbone():
    with pytest.raises(ConfigError, match="conv4"):
        build_backbone("vgg", ways=5)
