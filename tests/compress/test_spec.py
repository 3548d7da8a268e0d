"""The spec: compact strings, YAML, round trips, and bad values naming their field."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fewbit.compress import (
    ClusterConfig,
    PruneConfig,
    QuantConfig,
    load_spec,
    parse_spec,
    spec_from_list,
    spec_to_list,
)
from fewbit.errors import ConfigError


def test_compact_grammar() -> None:
    assert parse_spec("quant:w4") == (QuantConfig(bits_weight=4),)
    assert parse_spec("quant:w4a8") == (QuantConfig(bits_weight=4, bits_act=8),)
    assert parse_spec("quant:a8") == (QuantConfig(bits_weight=None, bits_act=8),)
    assert parse_spec("quant:w2:per_tensor") == (QuantConfig(bits_weight=2, granularity="per_tensor"),)
    assert parse_spec("quant:w3:asym:mse:lsq") == (
        QuantConfig(bits_weight=3, symmetric=False, observer="mse", learnable_step=True),
    )
    assert parse_spec("cluster:16") == (ClusterConfig(k=16),)
    assert parse_spec("prune:0.5") == (PruneConfig(sparsity=0.5),)
    assert parse_spec("prune:2:4") == (PruneConfig(pattern="nm", n=2, m=4),)
    assert parse_spec("prune:channel:0.5:l2") == (PruneConfig(pattern="channel", sparsity=0.5, norm="l2"),)
    assert parse_spec("prune:0.8:poly") == (PruneConfig(sparsity=0.8, schedule="polynomial"),)
    spec = parse_spec("prune:0.5, quant:w4a8@features.*|head")
    assert [type(c) for c in spec] == [PruneConfig, QuantConfig]
    assert spec[1].layers == ("features.*", "head")


def test_round_trip_through_yaml_form(tmp_path) -> None:
    spec = parse_spec("prune:channel:0.25@features.*,quant:w4a8:per_tensor,cluster:8")
    assert spec_from_list(spec_to_list(spec)) == spec
    path = tmp_path / "spec.yaml"
    path.write_text("compress:\n  - method: prune\n    sparsity: 0.5\n  - {method: quant, bits_weight: 4}\n")
    assert load_spec(path) == (PruneConfig(sparsity=0.5), QuantConfig(bits_weight=4))
    assert load_spec(str(path)) == load_spec(path)
    assert load_spec(QuantConfig(bits_weight=2)) == (QuantConfig(bits_weight=2),)


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: QuantConfig(bits_weight=0), "QuantConfig.bits_weight"),
        (lambda: QuantConfig(bits_weight=9), "QuantConfig.bits_weight"),
        (lambda: QuantConfig(bits_weight=4, bits_act=0), "QuantConfig.bits_act"),
        (lambda: QuantConfig(bits_weight=4, observer="max"), "QuantConfig.observer"),
        (lambda: QuantConfig(bits_weight=4, granularity="per_row"), "QuantConfig.granularity"),
        (lambda: ClusterConfig(k=1), "ClusterConfig.k"),
        (lambda: ClusterConfig(k=257), "ClusterConfig.k"),
        (lambda: PruneConfig(sparsity=1.0), "PruneConfig.sparsity"),
        (lambda: PruneConfig(sparsity=-0.1), "PruneConfig.sparsity"),
        (lambda: PruneConfig(pattern="nm", n=4, m=4), "PruneConfig.n"),
        (lambda: PruneConfig(pattern="blocks"), "PruneConfig.pattern"),
        (lambda: parse_spec("quant:w0"), "QuantConfig.bits_weight"),
        (lambda: parse_spec("prune:1.5"), "PruneConfig.sparsity"),
        (lambda: parse_spec("cluster:1"), "ClusterConfig.k"),
        (lambda: parse_spec("sparsify:0.5"), "unknown method"),
        (lambda: parse_spec("quant:x4"), "quant widths"),
        (lambda: spec_from_list([{"method": "quant", "bits": 4}]), "unknown field"),
    ],
)
def test_bad_values_name_the_field(make, field) -> None:
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        make()


def test_configs_are_frozen() -> None:
    config = QuantConfig(bits_weight=4)
    with pytest.raises(AttributeError):
        config.bits_weight = 2  # type: ignore[misc]


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet="quantprneclsw0123456789:.,@*|ab_ ", max_size=30))
def test_any_spec_string_parses_or_raises_config_error(text: str) -> None:
    try:
        spec = parse_spec(text)
    except ConfigError:
        return
    assert spec and spec_from_list(spec_to_list(spec)) == spec
