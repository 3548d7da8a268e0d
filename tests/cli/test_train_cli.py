"""`fewbit train` and `fewbit eval`: the flag contract, the --json contract, one-line errors, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from fewbit.cli import main
from tests.conftest import make_omniglot_folder

SINE_FLAGS = ["--dataset", "sinusoid", "--algorithm", "maml", "--shots", "5", "--queries", "5", "--meta-batch", "2",
              "--inner-steps", "1", "--inner-lr", "0.01", "--outer-lr", "0.001", "--steps", "4", "--seed", "3",
              "--val-every", "2", "--val-tasks", "4", "--device", "cpu"]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # an argument error: one line from argparse
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("cli-omniglot")
    return f"omniglot:{make_omniglot_folder(root, root='bg', alphabets=5, characters=5, drawings=8, seed=1)}"


def test_train_then_eval_with_json(capsys, tmp_path, images):
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", "--dataset", images, "--algorithm", "protonet", "--backbone", "mlp",
                             "--ways", "3", "--shots", "1", "--queries", "2", "--meta-batch", "2", "--steps", "3",
                             "--val-every", "3", "--val-tasks", "3", "--out", str(run), "--json", "--device", "cpu")
    assert code == 0, err
    trained = json.loads(out)
    assert trained["run_dir"] == str(run) and trained["steps"] == 3 and trained["best"]["metric"] == "accuracy"
    assert {"config.yaml", "metrics.jsonl", "checkpoints"} <= {p.name for p in run.iterdir()}
    code, out, err = run_cli(capsys, "eval", str(run), "--tasks", "6", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert {"accuracy", "ci95", "tasks", "ways", "shots"} <= set(result)
    assert (result["tasks"], result["ways"], result["shots"], result["split"]) == (6, 3, 1, "test")
    assert json.loads((run / "eval.json").read_text()) == result
    code, out, _ = run_cli(capsys, "eval", str(run), "--tasks", "4", "--shots", "2", "--split", "val", "--quiet")
    assert code == 0 and "3-way 2-shot accuracy" in out and "+-" in out
    assert result["views"] == 1
    code, out, err = run_cli(capsys, "eval", str(run), "--tasks", "6", "--views", "8", "--json")
    assert code == 0, err
    viewed = json.loads(out)
    assert viewed["views"] == 8 and viewed["tasks"] == 6
    code, _, err = run_cli(capsys, "eval", str(run), "--tasks", "6", "--views", "3")
    assert code == 2 and "--views" in err


def test_eval_views_need_images(capsys, tmp_path):
    run = tmp_path / "sine"
    code, _, err = run_cli(capsys, "train", *SINE_FLAGS, "--steps", "1", "--val-every", "0", "--out", str(run))
    assert code == 0, err
    code, _, err = run_cli(capsys, "eval", str(run), "--tasks", "2", "--views", "4")
    assert code != 0 and "--views" in err and len(err.strip().splitlines()) == 1


def test_config_file_with_flags_on_top(capsys, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"dataset": "sinusoid", "steps": 2, "shots": 5, "queries": 5, "meta_batch": 2,
                                      "val_every": 0, "meta": {"algorithm": "fomaml", "inner_lr": 0.02}}))
    code, out, err = run_cli(capsys, "train", "--config", str(config), "--steps", "3", "--out", str(tmp_path / "r"),
                             "--json", "--device", "cpu")
    assert code == 0, err
    saved = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert (saved["steps"], saved["meta"]["algorithm"], saved["meta"]["inner_lr"]) == (3, "fomaml", 0.02)
    code, out, _ = run_cli(capsys, "eval", str(tmp_path / "r"), "--tasks", "5", "--json")
    assert code == 0 and "mse" in json.loads(out)


def test_resume_continues_and_refuses_other_settings(capsys, tmp_path):
    run = tmp_path / "run"
    assert run_cli(capsys, "train", *SINE_FLAGS, "--out", str(run), "--quiet")[0] == 0
    code, out, err = run_cli(capsys, "train", "--resume", str(run), "--steps", "6", "--json")
    assert code == 0, err and json.loads(out)["steps"] == 6
    code, _, err = run_cli(capsys, "train", "--resume", str(run), "--ways", "3")
    assert code == 2 and "--ways" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--algorithm", "magic"], "choose one of maml, fomaml, metasgd, anil, reptile, protonet, finetune"),
        (["--backbone", "vgg"], "choose one of auto, mlp, conv4, conv1d, resnet12, got 'vgg'"),
        (["--inner-steps", "-1"], "inner_steps: must be an integer >= 0"),
        (["--dataset", "nowhere"], "unknown data source"),
    ],
)
def test_bad_input_is_one_line(capsys, tmp_path, argv, message):
    code, out, err = run_cli(capsys, "train", *SINE_FLAGS, *argv, "--out", str(tmp_path / "r"))
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("fewbit: error:")


def test_shots_beyond_the_data_and_not_a_run_are_one_line(capsys, tmp_path, images):
    code, _, err = run_cli(capsys, "train", "--dataset", images, "--backbone", "mlp", "--ways", "3", "--shots", "9",
                           "--queries", "2", "--out", str(tmp_path / "r"))
    assert code == 2 and "lower --shots" in err and len(err.strip().splitlines()) == 1
    for target in (tmp_path / "missing", tmp_path):
        code, _, err = run_cli(capsys, "eval", str(target))
        assert code == 2 and "is not a run directory" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "half").mkdir()
    Path(tmp_path / "half" / "config.yaml").write_text("dataset: sinusoid\n")
    code, _, err = run_cli(capsys, "eval", str(tmp_path / "half"))
    assert code == 2 and "no readable checkpoint" in err


def test_eval_at_other_ways_needs_a_head_free_algorithm(capsys, tmp_path, images):
    run = tmp_path / "maml"
    code, _, err = run_cli(capsys, "train", "--dataset", images, "--algorithm", "fomaml", "--backbone", "mlp",
                           "--ways", "3", "--queries", "2", "--meta-batch", "2", "--steps", "1", "--val-every", "0",
                           "--out", str(run), "--quiet", "--device", "cpu")
    assert code == 0, err
    code, _, err = run_cli(capsys, "eval", str(run), "--ways", "4", "--tasks", "2")
    assert code == 2 and "--ways 3" in err
    code, out, err = run_cli(capsys, "eval", str(run), "--tasks", "2", "--json", "--dataset", images, "--split", "val")
    assert code == 0 and json.loads(out)["split"] == "val"


def test_eval_chooses_the_adaptation_scope_and_reports_its_memory(capsys, tmp_path, images):
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--dataset", images, "--algorithm", "maml", "--ways", "3", "--shots", "1",
                           "--queries", "2", "--meta-batch", "1", "--steps", "2", "--val-every", "0",
                           "--compress", "quant:w4a8", "--out", str(run), "--json", "--device", "cpu")
    assert code == 0, err
    memory = {}
    for scope in ("all", "bias_norm", "head"):
        code, out, err = run_cli(capsys, "eval", str(run), "--tasks", "3", "--queries", "2", "--scope", scope, "--json")
        assert code == 0, err
        memory[scope] = json.loads(out)["adaptation_memory"]
        assert memory[scope]["scope"] == scope
    assert memory["all"]["total_bytes"] > memory["bias_norm"]["total_bytes"] > memory["head"]["total_bytes"] > 0
    code, out, _ = run_cli(capsys, "eval", str(run), "--tasks", "3", "--queries", "2", "--scope", "head")
    assert code == 0 and "on-device adaptation (head)" in out
