import json
import subprocess
import sys
from pathlib import Path

import pytest

from fewbit.cli import main
from tests.conftest import make_omniglot_zip


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def omni_zip(tmp_path: Path, fewbit_cache: Path) -> Path:
    return make_omniglot_zip(tmp_path / "bg.zip", alphabets=3, characters=4, drawings=20)


def test_data_info_json(capsys, omni_zip):
    code, out, _ = run_cli(capsys, "data", "info", f"omniglot:{omni_zip}", "--json")
    assert code == 0
    info = json.loads(out)
    assert (info["alphabets"], info["classes"], info["images"]) == (3, 12, 240)
    assert info["image_size"] == [28, 28]


def test_data_info_text(capsys, omni_zip):
    code, out, _ = run_cli(capsys, "data", "info", f"omniglot:{omni_zip}", "--split", "train")
    assert code == 0 and "classes" in out


def test_data_info_joined_split_counts_train_and_val(capsys, omni_zip):
    infos = {}
    for split in ("train", "val", "train+val"):
        code, out, _ = run_cli(capsys, "data", "info", f"omniglot:{omni_zip}", "--split", split, "--json")
        assert code == 0
        infos[split] = json.loads(out)
    assert infos["train+val"]["classes"] == infos["train"]["classes"] + infos["val"]["classes"]
    assert infos["train+val"]["images"] == infos["train"]["images"] + infos["val"]["images"]


def test_data_show_writes_png(capsys, omni_zip, tmp_path):
    png = tmp_path / "task.png"
    code, out, _ = run_cli(capsys, "data", "show", f"omniglot:{omni_zip}", "--split", "all",
                           "--ways", "5", "--shots", "1", "--out", str(png), "--json")
    assert code == 0
    assert json.loads(out)["out"] == str(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_data_show_names_the_classes_it_drew(capsys, tmp_path, fewbit_cache):
    """Rows were labelled `class 0..4`; they carry the folders' names, and the JSON lists them in label order."""
    from PIL import Image

    names = ["cat", "dog", "$x^{2$", "owl", "a very long class folder name"]
    for i, name in enumerate(names):
        (tmp_path / "pics" / name).mkdir(parents=True)
        for j in range(4):
            Image.new("RGB", (20, 30), (40 * i, 10 * j, 200)).save(tmp_path / "pics" / name / f"{j}.png")
    png = tmp_path / "task.png"
    code, out, err = run_cli(capsys, "data", "show", f"folder:{tmp_path / 'pics'}", "--split", "all",
                             "--ways", "5", "--out", str(png), "--json")
    assert code == 0, err
    assert sorted(json.loads(out)["classes"]) == sorted(names)  # mathtext-like names are drawn as text


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["data", "info", "omniglot:/no/such/file.zip"], "does not exist"),
        (["data", "info", "bogus"], "unknown data source"),
        (["data", "info", "omniglot-minimal:/no/such/dir"], "not a folder"),
    ],
)
def test_bad_input_is_one_line(capsys, argv, needle):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert needle in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_not_a_zip_and_too_many_ways(capsys, tmp_path, omni_zip):
    bad = tmp_path / "x.zip"
    bad.write_bytes(b"this is not a zip")
    code, _, err = run_cli(capsys, "data", "info", f"omniglot:{bad}")
    assert code == 2 and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capsys, "data", "show", f"omniglot:{omni_zip}", "--split", "all", "--ways", "50",
                           "--out", str(tmp_path / "t.png"))
    assert code == 2 and "50-way" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "t.png").exists()
    code, _, err = run_cli(capsys, "data", "show", f"omniglot:{omni_zip}", "--split", "all", "--shots", "15",
                           "--queries", "10", "--out", str(tmp_path / "t.png"))
    assert code == 2 and "shots + queries" in err


def test_nonpositive_ways_rejected_by_parser(tmp_path):
    out = subprocess.run([sys.executable, "-m", "fewbit.cli", "data", "show", "sinusoid", "--ways", "0"],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert "must be >= 1" in out.stderr and "Traceback" not in out.stderr


def test_sinusoid_info(capsys):
    code, out, _ = run_cli(capsys, "data", "info", "sinusoid", "--json")
    assert code == 0 and json.loads(out)["kind"] == "regression"
