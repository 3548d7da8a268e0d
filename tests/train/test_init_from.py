"""Starting a run from another run's weights: a classifier pre-trained over many classes starts a meta-learner."""

from __future__ import annotations

import json

import pytest
import torch

from fewbit.cli import main
from fewbit.errors import ConfigError
from fewbit.train import load_config, load_run, meta_train


def _config(spec: str, **changes: object):  # noqa: ANN202
    base = {"dataset": spec, "image_size": 16, "backbone": "conv4", "ways": 3, "shots": 1, "queries": 2,
            "meta_batch": 2, "batch_size": 16, "steps": 3, "val_every": 0, "device": "cpu"}
    return load_config(None, **{**base, **changes})


def test_the_body_fits_and_is_copied_the_head_over_other_classes_is_not(tiny_colour, tmp_path) -> None:
    pre = meta_train(_config(tiny_colour, algorithm="simpleshot", steps=5), tmp_path / "pre", progress=False)
    assert pre.model.head.out_features == 9  # every training class
    run = meta_train(_config(tiny_colour, algorithm="metabaseline", init_from=str(tmp_path / "pre"), steps=0),
                     tmp_path / "meta", progress=False)
    body = {n: p for n, p in pre.model.state_dict().items() if n.startswith("features.")}
    assert body and all(torch.equal(run.model.state_dict()[n], v) for n, v in body.items())
    fresh = meta_train(_config(tiny_colour, algorithm="metabaseline", steps=0), tmp_path / "fresh", progress=False)
    assert not torch.equal(fresh.model.state_dict()["features.0.0.weight"], body["features.0.0.weight"])
    with pytest.raises(ConfigError, match="no weight of .* fits"):
        meta_train(_config(tiny_colour, algorithm="protonet", backbone="mlp", init_from=str(tmp_path / "pre")),
                   tmp_path / "mlp", progress=False)
    with pytest.raises(ConfigError, match="not a run directory"):
        meta_train(_config(tiny_colour, algorithm="protonet", init_from=str(tmp_path)), tmp_path / "x",
                   progress=False)


def test_eval_with_another_head_free_algorithm(tiny_colour, tmp_path, capsys) -> None:
    meta_train(_config(tiny_colour, algorithm="simpleshot", steps=5), tmp_path / "pre", progress=False)
    for name in ("protonet", "metabaseline"):
        assert main(["eval", str(tmp_path / "pre"), "--algorithm", name, "--tasks", "10", "--json", "--quiet"]) == 0
        assert 0.0 <= json.loads(capsys.readouterr().out)["accuracy"] <= 1.0
    assert main(["eval", str(tmp_path / "pre"), "--algorithm", "maml", "--tasks", "10", "--quiet"]) == 2
    assert "adapts the run's trained head" in capsys.readouterr().err
    assert load_run(tmp_path / "pre").algorithm.name == "simpleshot"


def test_a_compressed_run_from_float_weights_prunes_and_quantizes_those_weights(tiny_colour, tmp_path) -> None:
    """`--init-from FLOAT --compress SPEC`: the masks and quantizer steps are worked out from the start
    run's weights (they were worked out from the random initialisation the weights then replaced)."""
    import copy

    from fewbit.train.run import compress_model_

    spec = "prune:0.5,quant:w4a8:lsq"
    pre = meta_train(_config(tiny_colour, algorithm="simpleshot", steps=5), tmp_path / "pre", progress=False)
    run = meta_train(_config(tiny_colour, algorithm="simpleshot", init_from=str(tmp_path / "pre"), compress=spec,
                             steps=0), tmp_path / "c", progress=False)
    want = copy.deepcopy(pre.model)
    compress_model_(want, spec)
    got, want = run.model.state_dict(), want.state_dict()
    compression = [n for n in want if ".cq_" in n]
    assert any(n.endswith("cq_mask.mask") for n in compression) and any(n.endswith(".step") for n in compression)
    for name in compression:
        assert torch.equal(got[name], want[name]), name
    weight = pre.model.state_dict()["features.1.0.weight"].abs()
    mask = got["features.1.0.cq_mask.mask"].bool()
    assert weight[mask].min() >= weight[~mask].max()  # the largest start weights are the ones kept

    # a start run of the same compression gives its own masks and learned steps
    trained = meta_train(_config(tiny_colour, algorithm="simpleshot", compress=spec, steps=5), tmp_path / "q",
                         progress=False)
    again = meta_train(_config(tiny_colour, algorithm="simpleshot", init_from=str(tmp_path / "q"), compress=spec,
                               steps=0), tmp_path / "q2", progress=False)
    for name, value in trained.model.state_dict().items():
        if ".cq_" in name:
            assert torch.equal(again.model.state_dict()[name], value), name
