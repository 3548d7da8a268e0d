"""The models fewbit ships: each loads, its manifest matches its card, and it reaches its recorded
accuracy on a fixed task list; `fewbit models`, `adapt --model`, `eval --model`, `export --model`."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

import fewbit.runtime as rt
from fewbit.cli import main
from fewbit.errors import FewbitError
from fewbit.evaluation import evaluate_artifact
from fewbit.pretrained import HERE, model_card, model_cards, model_names, model_path
from fewbit.train.run import eval_dataset
from tests.conftest import SHARED_OMNIGLOT

NAMES = model_names()
CARD_KEYS = {"name", "summary", "data", "backbone", "compress", "algorithm", "commands", "config", "seed", "steps",
             "train_seconds", "ways", "shots", "accuracy", "ci95", "tasks", "results", "check", "bytes", "sha256",
             "adapt_latency_ms", "manifest"}


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_fewbit_ships_an_omniglot_and_a_glyphs_model_with_a_low_bit_variant():
    assert any(n.startswith("omniglot") for n in NAMES) and any(n.startswith("glyphs") for n in NAMES)
    assert any(model_card(n)["compress"].startswith(("quant:w2", "prune")) for n in NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_each_artifact_loads_and_matches_its_card(name):
    card = model_card(name)
    assert set(card) >= CARD_KEYS
    blob = model_path(name).read_bytes()
    assert card["bytes"] == len(blob) and card["sha256"] == hashlib.sha256(blob).hexdigest()
    assert len(blob) <= 64 * 1024  # tens of KB: it belongs in the package
    model = rt.load(name)  # by name, no path
    assert list(model.input_shape) == card["manifest"]["input_shape"]
    assert model.preprocessing == card["manifest"]["preprocessing"]
    assert model.adaptation == card["manifest"]["adaptation"]
    assert model.algorithm == card["algorithm"]
    assert "$OMNIGLOT" not in json.dumps(card["config"]) or card["data"]["spec"].startswith("omniglot")
    assert all(cmd.startswith("fewbit ") for cmd in card["commands"])
    if name.startswith("omniglot"):
        assert "MIT" in card["data"]["licence"] and "small1" in card["data"]["trained_on"]
        assert "never" in card["data"]["tested_on"]
    first = card["results"][0]
    assert (first["ways"], first["shots"], first["accuracy"], first["ci95"]) == (
        card["ways"], card["shots"], card["accuracy"], card["ci95"])


@pytest.mark.parametrize("name", NAMES)
def test_a_cards_runs_come_in_training_order(name):
    """Each run's --teacher, --init-from (or a search's --from) is a run an earlier command made; the
    times add up."""
    card = model_card(name)
    runs = card.get("train_runs", [{"command": card["commands"][0], "train_seconds": card["train_seconds"]}])
    assert [r["command"] for r in runs] == card["commands"][:len(runs)]
    assert sum(r["train_seconds"] for r in runs) == card["train_seconds"]
    made: list[str] = []
    for run in runs:
        argv = run["command"].split()
        for flag in ("--teacher", "--init-from", "--from"):
            if flag in argv:
                assert argv[argv.index(flag) + 1] in made, f"{flag} names no earlier run of {name}"
        made.append(argv[argv.index("--out") + 1])
    assert made[-1] in card["commands"][len(runs)]  # the export reads the last run


SEARCHED = [n for n in NAMES if "plan" in model_card(n)]


@pytest.mark.parametrize("name", SEARCHED)
def test_a_searched_models_card_holds_its_plan_and_the_file_fits_its_budget(name):
    """The models `fewbit search` made: the artifact is the plan the card names (the search's chosen
    candidate), within the budget searched for, beside the uniform plans it was weighed against."""
    card = model_card(name)
    search = card["search"]
    assert rt.load(name).manifest["source"]["compress"] == card["plan"] == card["compress"]
    assert card["bytes"] <= search["budget"]
    assert [c["spec"] for c in search["candidates"] if c["chosen"]] == [card["plan"]] == [search["winner"]["spec"]]
    assert all(c["bytes"] <= search["budget"] for c in search["candidates"])
    assert all(u["bytes"] <= search["budget"] and u["label"] for u in search["uniform"])
    assert sum(c.startswith("fewbit search ") for c in card["commands"]) == 1


def _test_split(card: dict) -> object:
    spec = card["data"]["spec"]
    if spec.startswith("omniglot"):
        if not SHARED_OMNIGLOT.is_dir():
            pytest.skip("needs ../shared/data/omniglot")
        spec = spec.replace("$OMNIGLOT", str(SHARED_OMNIGLOT.resolve()))
    model = rt.load(card["name"])
    return model, eval_dataset(spec, "test", None, model.prep, progress=False)


@pytest.mark.parametrize("name", NAMES)
def test_each_model_reaches_its_recorded_accuracy_on_the_fixed_tasks(name):
    card = model_card(name)
    check = card["check"]
    model, test = _test_split(card)
    got = evaluate_artifact(model, test, ways=check["ways"], shots=check["shots"], queries=check["queries"],
                            tasks=check["tasks"], seed=check["seed"])
    # the same tasks give the same predictions (up to a query or two of float rounding across machines)
    assert abs(got.value - check["accuracy"]) <= 2 / (check["tasks"] * check["ways"] * check["queries"])
    # and the card's 600-task figure lies within this sample's 95% interval
    assert abs(got.value - card["accuracy"]) <= got.ci95 + card["ci95"]


def test_models_lists_them_as_json_and_as_a_table(capsys):
    code, out, err = run_cli(capsys, "models", "--json")
    assert code == 0, err
    listed = json.loads(out)["models"]
    assert [m["name"] for m in listed] == list(NAMES)
    for m in listed:
        assert {"name", "bytes", "accuracy", "ci95", "ways", "shots"} <= set(m)
        assert m == model_card(m["name"])
    code, out, _ = run_cli(capsys, "models")
    assert code == 0 and all(n in out for n in NAMES) and "fewbit adapt --model" in out


def test_a_name_that_is_not_shipped_is_one_clear_error(capsys):
    with pytest.raises(FewbitError, match="fewbit ships"):
        model_path("no-such-model")
    code, _, err = run_cli(capsys, "adapt", "--model", "no-such-model", "--support", ".", "--query", ".")
    assert code != 0 and "fewbit ships" in err and "Traceback" not in err
    code, _, err = run_cli(capsys, "adapt", str(model_path(NAMES[0])), "--model", NAMES[0], "--support", ".",
                           "--query", ".")
    assert code != 0 and "one of them" in err


def test_cards_and_artifacts_come_in_pairs():
    stems = {p.stem for p in HERE.glob("*.fewbit")}
    assert stems == {p.stem for p in HERE.glob("*.json")} == set(NAMES)
    assert len(model_cards()) == len(NAMES)


GLYPHS = next((n for n in NAMES if n.startswith("glyphs")), None)


def _write_task(root: Path, model: rt.RuntimeModel, shots: int = 1) -> tuple[Path, Path]:
    """Support and query folders of 3 glyph classes from the glyphs test split, as PNG files."""
    from PIL import Image

    from fewbit.data.sources import load_source

    test = load_source("glyphs").split("test")
    rng = np.random.default_rng(0)
    support, query = root / "support", root / "query"
    for c in rng.choice(test.num_classes, 3, replace=False):
        idx = np.flatnonzero(test.labels == c)[: shots + 2]
        for where, ids in ((support, idx[:shots]), (query, idx[shots:])):
            (where / f"c{c}").mkdir(parents=True, exist_ok=True)
            for i in ids:
                img = test.images[i]
                pixels = np.asarray(img).reshape(img.shape[-2:])  # ink 255 on black, as stored
                Image.fromarray(pixels).save(where / f"c{c}" / f"{i}.png")
    return support, query


@pytest.mark.skipif(GLYPHS is None, reason="no glyphs model shipped")
def test_adapt_with_a_shipped_model_on_own_folders(capsys, tmp_path):
    model = rt.load(GLYPHS)
    support, query = _write_task(tmp_path, model)
    code, out, err = run_cli(capsys, "adapt", "--model", GLYPHS, "--support", str(support), "--query", str(query),
                             "--json")
    assert code == 0, err
    result = json.loads(out)
    assert len(result["predictions"]) == 6
    assert result["accuracy"] >= 0.5  # 3 classes: chance is 1/3
    assert result["views"] == 1
    code, out, err = run_cli(capsys, "adapt", "--model", GLYPHS, "--support", str(support), "--query", str(query),
                             "--views", "8", "--json")
    assert code == 0, err
    viewed = json.loads(out)
    assert viewed["views"] == 8 and len(viewed["predictions"]) == 6


@pytest.mark.skipif(GLYPHS is None, reason="no glyphs model shipped")
def test_eval_with_a_shipped_model_scores_what_the_runtime_scores(capsys):
    code, out, err = run_cli(capsys, "eval", "--model", GLYPHS, "--dataset", "glyphs", "--tasks", "20", "--json")
    assert code == 0, err
    result = json.loads(out)
    model = rt.load(GLYPHS)
    test = eval_dataset("glyphs", "test", None, model.prep, progress=False)
    want = evaluate_artifact(model, test, ways=5, shots=1, queries=15, tasks=20)
    assert (result["tasks"], result["ways"], result["runtime"]) == (20, 5, "numpy")
    assert result["accuracy"] == pytest.approx(want.value)
    code, out, err = run_cli(capsys, "eval", "--model", GLYPHS, "--dataset", "glyphs", "--tasks", "10", "--views", "4",
                             "--json")
    assert code == 0, err
    viewed = json.loads(out)
    want = evaluate_artifact(model, test, ways=5, shots=1, queries=15, tasks=10, views=4)
    assert viewed["views"] == 4 and viewed["accuracy"] == pytest.approx(want.value)
    code, _, err = run_cli(capsys, "eval", "--model", GLYPHS, "--tasks", "5")
    assert code != 0 and "--dataset" in err


@pytest.mark.skipif(GLYPHS is None, reason="no glyphs model shipped")
def test_export_a_shipped_model_to_onnx_agrees_with_the_runtime(capsys, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    out_file = tmp_path / "m.onnx"
    code, out, err = run_cli(capsys, "export", "--model", GLYPHS, "--format", "onnx", "--out", str(out_file), "--json")
    assert code == 0, err
    assert json.loads(out)["bytes"] == out_file.stat().st_size
    model = rt.load(GLYPHS)
    x = np.random.default_rng(0).random((4, *model.input_shape), dtype=np.float32)
    session = ort.InferenceSession(str(out_file), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    ref = model.embed(x).reshape(4, -1)
    # equal up to 8-bit activation codes that round the other way (float summation order differs)
    assert np.abs(got.reshape(4, -1) - ref).max() <= 0.05 * np.abs(ref).max()
    assert np.corrcoef(got.reshape(-1), ref.reshape(-1))[0, 1] > 0.999


SIGNALS = next((n for n in NAMES if n.startswith("signals")), None)


@pytest.mark.skipif(SIGNALS is None, reason="no signals model shipped")
def test_the_shipped_signals_model_adapts_to_recordings_of_any_length(capsys, tmp_path):
    """One-channel recordings of 80 to 160 steps (csv and npy), one per class as support: the model
    resamples and normalises them as its card says and beats chance by far, from the CLI and in numpy."""
    from fewbit.data.synthetic import write_series_folder

    data = write_series_folder(tmp_path / "rec", classes=5, per_class=6, channels=1)
    support, query = tmp_path / "support", tmp_path / "query"
    for c in sorted(p.name for p in data.iterdir()):
        files = sorted((data / c).iterdir())
        for where, picked in ((support, files[:1]), (query, files[1:])):
            (where / c).mkdir(parents=True)
            for f in picked:
                (where / c / f.name).write_bytes(f.read_bytes())
    code, out, err = run_cli(capsys, "adapt", "--model", SIGNALS, "--support", str(support), "--query", str(query),
                             "--json")
    assert code == 0, err
    result = json.loads(out)
    assert len(result["predictions"]) == 25 and len(set(result["classes"])) == 5
    assert result["accuracy"] >= 0.6  # 5-way 1-shot: chance is 20%
    model = rt.load(SIGNALS)
    assert list(model.input_shape) == [1, 1, 128] and model.preprocessing["kind"] == "series"
