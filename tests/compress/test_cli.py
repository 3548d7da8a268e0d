"""`fewbit compress` and `fewbit inspect` on a saved model: the JSON contract and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from fewbit.cli import main
from fewbit.models import build_backbone


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = build_backbone("mlp", ways=10, in_features=64)
    meta = {"fewbit.backbone": json.dumps({"name": "mlp", "ways": 10, "in_features": 64})}
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "model.safetensors"), meta
    )
    return tmp_path


def test_compress_json_contract(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compress", str(run_dir), "--spec", "quant:w4:per_tensor", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["bytes"] == 9332 and data["float32_bytes"] == 68904
    assert data["ratio"] == pytest.approx(68904 / 9332, abs=1e-3)
    assert [row["name"] for row in data["layers"]] == ["features.1", "features.3", "head"]
    assert {"params", "bits", "sparsity", "bytes"} <= set(data["layers"][0])
    assert data["spec"][0]["method"] == "quant"


def test_compress_prints_a_table(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compress", str(run_dir), "--spec", "prune:0.5,quant:w4"]) == 0
    out = capsys.readouterr().out
    assert "features.1" in out and "total" in out and "bytes stored" in out


def test_inspect_run_and_saved_compressed_model(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(run_dir), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["bytes"] == data["float32_bytes"] == 68904 and data["ratio"] == 1.0
    # a compressed model saved with its spec: inspect rebuilds the compressed layers
    from fewbit.compress import compress

    torch.manual_seed(0)
    model = compress(build_backbone("mlp", ways=10, in_features=64), "prune:0.5,quant:w4:lsq")
    meta = {
        "fewbit.backbone": json.dumps({"name": "mlp", "ways": 10, "in_features": 64}),
        "fewbit.compress": "prune:0.5,quant:w4:lsq",
    }
    path = run_dir / "compressed.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), meta)
    assert main(["inspect", str(path), "--json"]) == 0
    from fewbit.compress import size_report

    assert json.loads(capsys.readouterr().out)["bytes"] == size_report(model).bytes


def test_inspect_artifact_prints_the_artifact_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from fewbit.compress import compress
    from fewbit.deploy import export
    from fewbit.models import build_backbone

    artifact = tmp_path / "model.fewbit"
    export(compress(build_backbone("conv4", ways=5), "quant:w4"), artifact, algorithm="protonet")
    assert main(["inspect", str(artifact), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["bytes"] == artifact.stat().st_size and info["ratio"] > 7
    assert main(["inspect", str(artifact)]) == 0
    text = capsys.readouterr().out
    assert "features.0.0" in text and not text.lstrip().startswith("{")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["compress", "{run}", "--spec", "quant:w0"], "QuantConfig.bits_weight"),
        (["compress", "{run}", "--spec", "prune:1.2"], "PruneConfig.sparsity"),
        (["compress", "{run}", "--spec", "quant:w4@nothing.*"], "matches no Linear/Conv2d"),
        (["compress", "{run}/missing", "--spec", "quant:w4"], "does not exist"),
    ],
)
def test_bad_input_is_one_line(
    run_dir: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main([a.replace("{run}", str(run_dir)) for a in args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fewbit: error:") and message in err and "\n" not in err


def test_compress_and_inspect_a_meta_trained_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import fewbit.train as train
    sine = {
        "dataset": "sinusoid",
        "algorithm": "maml",
        "shots": 5,
        "queries": 5,
        "meta_batch": 2,
        "steps": 2,
        "val_every": 0,
        "checkpoint_every": 2,
        "device": "cpu",
    }
    train.meta_train(train.load_config(None, **sine), tmp_path / "float", progress=False)
    assert main(["compress", str(tmp_path / "float"), "--spec", "prune:0.5,quant:w4", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["bytes"] < data["float32_bytes"] and data["layers"][0]["sparsity"] == 0.5
    train.meta_train(
        train.load_config(None, **{**sine, "compress": "quant:w2"}), tmp_path / "q", progress=False
    )
    assert main(["inspect", str(tmp_path / "q"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["spec"] == "quant:w2" and {row["bits"] for row in data["layers"]} == {2}


@pytest.mark.parametrize(
    ("backbone", "message"),
    [
        ("{not json", "metadata is not JSON"),
        ('["mlp"]', "must be a JSON object with a backbone name"),
        ('{"ways": 10}', "must be a JSON object with a backbone name"),
        ('{"name": "vgg", "ways": 10}', "does not describe a model"),
        ('{"name": "mlp", "ways": 10, "colour": "red"}', "does not describe a model"),
        ('{"name": "mlp", "ways": -3, "in_features": 64}', "does not describe a model"),
        ('{"name": "conv4", "ways": 10, "image_size": 12}', "does not describe a model"),
        ('{"name": "mlp", "ways": 200000000, "in_features": 64}', "tensors do not fit"),
        ('{"name": "mlp", "ways": 10, "in_features": 100000000}', "tensors do not fit"),
    ],
)
def test_bad_backbone_metadata_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], backbone: str, message: str
) -> None:
    """The metadata used to reach build_backbone unchecked: a traceback, or a 51 GB head for ways=2e8."""
    torch.manual_seed(0)
    model = build_backbone("mlp", ways=10, in_features=64)
    path = tmp_path / "m.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), {"fewbit.backbone": backbone})
    for command in (["inspect", str(path)], ["compress", str(path), "--spec", "quant:w4"]):
        assert main(command) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("fewbit: error:") and message in err and "\n" not in err, err


def test_metadata_with_tensors_of_the_wrong_shape_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = build_backbone("mlp", ways=10, in_features=64)
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    tensors["head.weight"] = torch.zeros(3, 3)
    path = tmp_path / "m.safetensors"
    save_file(tensors, str(path), {"fewbit.backbone": json.dumps({"name": "mlp", "ways": 10, "in_features": 64})})
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "head.weight of shape [10, 64] is stored as [3, 3]" in err and "\n" not in err
