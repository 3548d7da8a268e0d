"""`fewbit search` end to end on a tiny generated Omniglot-layout zip: the --json contract, the
exported file's size, the spec that `fewbit train --compress` takes, and one-line bad input."""

import json
import os

import pytest

from fewbit.cli import main
from fewbit.compress.spec import parse_spec
from fewbit.train import TrainConfig
from tests.conftest import make_omniglot_zip

TINY = ["--backbone", "conv4", "--algorithm", "protonet", "--ways", "3", "--shots", "1", "--queries", "2",
        "--meta-batch", "1", "--val-every", "0", "--checkpoint-every", "10", "--device", "cpu",
        "--episodes", "4", "--top-k", "2", "--rerank-steps", "1", "--rerank-tasks", "4", "--pilot-steps", "2",
        "--bits", "2,4,8", "--sparsity", "0,0.5"]


@pytest.fixture
def tiny_data(tmp_path, fewbit_cache):
    return make_omniglot_zip(tmp_path / "bg.zip", alphabets=5, characters=4, drawings=6)


def test_search_json_contract_and_exact_bytes(tmp_path, tiny_data, capsys):
    out = tmp_path / "s"
    code = main(["search", "--dataset", f"omniglot:{tiny_data}", "--budget", "40K", "--steps", "2",
                 "--out", str(out), "--json", *TINY])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    data = json.loads(captured.out)
    assert data["bytes"] == os.path.getsize(data["artifact"]) <= 40 * 1024
    TrainConfig.from_dict({"dataset": "glyphs", "compress": data["spec"]})  # `fewbit train --compress` takes it
    assert all("@" in item for item in data["spec"].split(","))  # per-layer items
    assert len(parse_spec(data["spec"])) >= 1
    assert 1 <= len(data["candidates"]) <= 2
    for cand in data["candidates"]:
        assert {"spec", "bytes", "estimated_bytes", "estimated_loss_increase", "val_accuracy"} <= set(cand)
        assert cand["bytes"] <= 40 * 1024
    assert sum(c["chosen"] for c in data["candidates"]) == 1
    chosen = next(c for c in data["candidates"] if c["chosen"])
    assert chosen["spec"] == data["spec"]
    record = json.loads((out / "search.json").read_text())
    assert record["spec"] == data["spec"] and set(record["sensitivity"]) == set(data["layers"])


@pytest.mark.parametrize("budget,needle", [
    ("0", "SearchConfig.budgets: must be 1 byte"),
    ("abc", "expected bytes like 24K"),
    ("-3K", "expected bytes like 24K"),
    ("2K", "smaller than the smallest plan"),
])
def test_bad_budget_is_one_line_before_any_training(tmp_path, tiny_data, capsys, budget, needle):
    out = tmp_path / "s"
    code = main(["search", "--dataset", f"omniglot:{tiny_data}", f"--budget={budget}", "--steps", "2",
                 "--out", str(out), *TINY])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not (out / "pilot").exists()


def test_budgets_trace_a_frontier_beside_uniform_plans(tmp_path, tiny_data, capsys):
    out = tmp_path / "s"
    code = main(["search", "--dataset", f"omniglot:{tiny_data}", "--budgets", "40K,48K", "--uniform", "1",
                 "--steps", "1", "--out", str(out), "--json", *TINY])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    data = json.loads(captured.out)
    assert [r["budget"] for r in data["results"]] == [40 * 1024, 48 * 1024]
    for r in data["results"]:
        assert r["bytes"] == os.path.getsize(r["artifact"]) <= r["budget"]
        (u,) = r["uniform"]
        assert u["bytes"] == os.path.getsize(u["artifact"]) <= r["budget"]
        assert len({layer_spec.split("@")[0] for layer_spec in u["spec"].split(",")}) <= 2  # one option everywhere
    assert data["plot"] and os.path.getsize(data["plot"]) > 1000


def test_a_yaml_config_is_read_and_its_bad_budget_is_one_line(tmp_path, tiny_data, capsys):
    config = tmp_path / "search.yaml"
    config.write_text(f"budget: 0\ntrain:\n  dataset: omniglot:{tiny_data}\n  algorithm: protonet\n")
    code = main(["search", "--config", str(config), "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert code == 2 and "SearchConfig.budgets: must be 1 byte" in err and len(err.strip().splitlines()) == 1
    config.write_text(f"budget: 24K\nbits: [5]\ntrain:\n  dataset: omniglot:{tiny_data}\n")
    assert main(["search", "--config", str(config), "--out", str(tmp_path / "s")]) == 2
    assert "SearchConfig.bits" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_an_interrupted_search_resumes_keeping_its_tables_and_finished_runs(tmp_path, tiny_data, capsys,
                                                                            monkeypatch):
    """A search stopped before its final training continues with --resume: the tables are read
    back (not measured again), the re-ranking runs kept, the final training done; the same winner."""
    import importlib
    import shutil

    search_module = importlib.import_module("fewbit.search.search")  # the module (the package exports the function)

    out = tmp_path / "s"
    argv = ["search", "--dataset", f"omniglot:{tiny_data}", "--budget", "40K", "--steps", "2", "--out", str(out),
            "--json", *TINY]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    budget_dir = out / str(40 * 1024)
    candidate = budget_dir / "candidates" / "0" / "metrics.jsonl"
    kept_metrics = candidate.read_bytes()
    # as if stopped during the final training: no result, no artifact, a run holding only its config
    (out / "search.json").unlink()
    (budget_dir / "model.fewbit").unlink()
    shutil.rmtree(budget_dir / "run")

    def measured_again(*args, **kwargs):
        raise AssertionError("the tables were measured again")

    monkeypatch.setattr(search_module, "loss_increase", measured_again)
    assert main(["search", "--out", str(out), "--resume", "--json"]) == 0  # the settings OUT records
    again = json.loads(capsys.readouterr().out)
    assert again["spec"] == first["spec"] and again["bytes"] == first["bytes"]
    assert (budget_dir / "model.fewbit").stat().st_size == again["bytes"]
    assert candidate.read_bytes() == kept_metrics  # the finished re-ranking run was kept, not trained again
    assert json.loads((out / "search.json").read_text())["spec"] == first["spec"]
    # a finished search resumed is the same search again, nothing trained
    assert main([*argv, "--resume"]) == 0
    assert json.loads(capsys.readouterr().out)["spec"] == first["spec"]
    # what scripts read back: the finished search of these settings, None where none, never another's
    from fewbit.cli.search import recorded
    from fewbit.errors import ConfigError

    config, from_run = recorded(str(out))
    assert search_module.finished_search(out, config, from_run)["spec"] == first["spec"]
    assert search_module.finished_search(tmp_path / "nothing", config, from_run) is None
    with pytest.raises(ConfigError, match="another config or start run"):
        search_module.finished_search(out, config, str(tmp_path / "another-start"))


def test_a_search_never_writes_over_a_folder_and_resumes_only_itself(tmp_path, tiny_data, capsys):
    base = ["search", "--dataset", f"omniglot:{tiny_data}", "--budget", "40K", "--steps", "2", *TINY]
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    code = main([*base, "--out", str(busy)])
    err = capsys.readouterr().err
    assert code == 2 and "not an empty folder" in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in busy.iterdir()) == ["notes.txt"]
    code = main([*base, "--out", str(busy), "--resume"])
    err = capsys.readouterr().err
    assert code == 2 and "holds no search to continue" in err, err
    out = tmp_path / "s"
    out.mkdir()
    (out / "search-config.json").write_text(json.dumps({"config": {}, "from_run": None}))
    code = main([*base, "--out", str(out), "--resume"])
    err = capsys.readouterr().err
    assert code == 2 and "holds a search of another config" in err and len(err.strip().splitlines()) == 1, err
    code = main([*base, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "continue it with --resume" in err, err
    assert sorted(p.name for p in out.iterdir()) == ["search-config.json"]
