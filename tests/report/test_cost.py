import torch

from fewbit.models import build_backbone
from fewbit.report.cost import adaptation_memory


def test_scopes_order_memory_as_expected():
    m = build_backbone("conv4", ways=5)
    x = torch.zeros(5, 1, 28, 28)
    mem = {s: adaptation_memory(m, s, x) for s in ("all", "bias_norm", "head", "none")}
    head_params = 2 * 4 * (64 * 5 + 5)
    assert mem["head"].param_bytes == head_params
    assert mem["head"].activation_bytes == 4 * 5 * 64  # the head's input only
    # bias_norm: conv biases + BN weights/biases
    assert mem["bias_norm"].param_bytes == 2 * 4 * (4 * 64 + 4 * 128 + 5)
    assert mem["all"].param_bytes == 2 * 4 * sum(p.numel() for p in m.parameters())
    assert mem["all"].activation_bytes > mem["bias_norm"].activation_bytes > mem["head"].activation_bytes
    assert mem["none"].param_bytes == 0
    # the largest layer is the first BatchNorm: input and output 5x64x28x28 floats
    assert mem["none"].activation_bytes == 4 * 5 * 2 * 64 * 28 * 28


def test_compressed_model_counts_the_same_activations():
    from fewbit.compress import compress

    m = build_backbone("conv4", ways=5)
    c = compress(m, "quant:w4a8")
    x = torch.zeros(5, 1, 28, 28)
    for scope in ("all", "head", "bias_norm"):
        plain, packed = adaptation_memory(m, scope, x), adaptation_memory(c, scope, x)
        assert packed.param_bytes == plain.param_bytes
        assert packed.activation_bytes >= plain.activation_bytes
    assert adaptation_memory(c, "head", x).activation_bytes == 4 * 5 * 64
