"""The C export treats what it reads as data: a crafted manifest never becomes code, the output
folder never loses a user's files, and nothing it writes for shipping names the building machine."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fewbit.artifact.format import encode_artifact, read_artifact
from fewbit.deploy import export
from fewbit.deploy.c_export import export_c
from fewbit.deploy.c_export.literals import c_token, comment_text
from fewbit.errors import ConfigError
from tests.deploy.helpers import compressed_mlp

CC = shutil.which("cc") or shutil.which("gcc")
HOSTILE = (
    '*/ int fewbit_pwned(void) { return 1; } /*',
    '*/\n#include "/etc/passwd"\n/*',
    "??/\n*/ #error boom /*",  # a trigraph line splice, then a comment end
    "\\\n*/ #error boom /*",
    "a\x00b\r\n\u2028*/",
)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("art") / "m.fewbit"
    export(compressed_mlp("quant:w4a8", ways=0), path, algorithm="protonet")
    return path


def _crafted(artifact: Path, folder: Path, text: str, name: str = "m.fewbit") -> Path:
    """`artifact` with `text` in every free-text field of its manifest."""
    art = read_artifact(artifact)
    manifest = json.loads(json.dumps(art.manifest))
    manifest["algorithm"] = text
    manifest["architecture"]["name"] = text
    manifest["producer"] = text
    path = folder / name
    path.write_bytes(encode_artifact(manifest, art.tensors))
    return path


def _generated(folder: Path) -> str:
    return "".join((folder / n).read_text() for n in ("fewbit_model.h", "fewbit_model.c"))


def _comments_closed_as_templated(source: str) -> None:
    # every comment the generator writes opens and closes on fewbit's own text: as many ends as starts,
    # and outside the comments not a character of the crafted text is left
    assert source.count("*/") == source.count("/*")
    code = re.sub(r"/\*.*?\*/", " ", source, flags=re.S)
    assert "pwned" not in code and "passwd" not in code and "#error" not in code and "??/" not in source


@pytest.mark.parametrize("text", HOSTILE)
def test_a_crafted_manifest_string_never_reaches_the_c_as_code(artifact: Path, text: str, tmp_path: Path) -> None:
    crafted = _crafted(artifact, tmp_path, text)
    export_c(crafted, tmp_path / "c", compile_check=CC is not None)
    source = _generated(tmp_path / "c")
    _comments_closed_as_templated(source)
    if CC is not None:  # the exported library compiles to exactly fewbit's own symbols
        done = subprocess.run(["make", "-s", "-C", str(tmp_path / "c"), "fewbit_model.o"], capture_output=True,
                              text=True)
        assert done.returncode == 0, done.stderr
        symbols = subprocess.run(["nm", str(tmp_path / "c" / "fewbit_model.o")], capture_output=True, text=True)
        assert "pwned" not in symbols.stdout


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200), file_name=st.text(alphabet=st.characters(blacklist_characters="/\x00"),
                                                     min_size=1, max_size=40))
def test_fuzzed_manifest_strings_and_file_names_stay_comment_text(
    artifact: Path, tmp_path: Path, text: str, file_name: str
) -> None:
    folder = tmp_path / f"f{abs(hash((text, file_name)))}"
    folder.mkdir()
    try:
        crafted = _crafted(artifact, folder, text, name=file_name + ".fewbit")
    except OSError:  # a name this file system refuses (too long, not encodable)
        return
    export_c(crafted, folder / "c", compile_check=False)
    source = _generated(folder / "c")
    _comments_closed_as_templated(source)
    header_comment = source.split("*/", 1)[0]  # the header's first comment quotes the read text
    assert re.fullmatch(r"[\x20-\x7e\n]*", header_comment)
    assert comment_text(text) in header_comment


def test_comment_text_and_c_token_refuse_what_is_not_theirs() -> None:
    assert comment_text("conv4 */ x /* \n") == "conv4 ?? x ?? ?"
    assert len(comment_text("x" * 500)) == 64
    assert c_token(3, "n") == "3" and c_token(0.5, "s") == "0x1.0000000000000p-1" and c_token("fb_s0_codes", "n")
    assert c_token("0x1.8p+3f", "x") == "0x1.8p+3f" and c_token("-12u", "x") == "-12u"
    for bad in ("1 /* */", "a b", "fb;", '"x"', "0x1p+3f)", "1e308e", ""):
        with pytest.raises(ConfigError, match="not a number or identifier"):
            c_token(bad, "field")
    with pytest.raises(ConfigError, match="not finite"):
        c_token(float("inf"), "scale")


def test_the_export_writes_only_into_a_new_empty_or_own_folder(artifact: Path, tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "Makefile").write_text("my own rules\n")
    (mine / "example_main.c").write_text("int main(void) { return 0; }\n")
    with pytest.raises(ConfigError, match="holds other files .*--force"):
        export_c(artifact, mine, compile_check=False)
    assert (mine / "Makefile").read_text() == "my own rules\n"
    assert sorted(p.name for p in mine.iterdir()) == ["Makefile", "example_main.c"]  # nothing written beside
    empty = tmp_path / "empty"
    empty.mkdir()
    export_c(artifact, empty, compile_check=False)
    (empty / "example").write_bytes(b"a build product")  # a folder the export wrote: exported again
    export_c(artifact, empty, compile_check=False)
    assert (empty / "example").read_bytes() == b"a build product"
    export_c(artifact, mine, compile_check=False, force=True)  # --force: fewbit's files replace the user's
    assert (mine / "Makefile").read_text() != "my own rules\n"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="not a folder"):
        export_c(artifact, tmp_path / "file", compile_check=False)


def test_a_forged_report_of_another_kind_is_no_licence(artifact: Path, tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "Makefile").write_text("mine\n")
    (mine / "fewbit_report.json").write_text("not json")
    with pytest.raises(ConfigError, match="holds other files"):
        export_c(artifact, mine, compile_check=False)
    (mine / "fewbit_report.json").unlink()
    (mine / "fewbit_report.json").symlink_to("/dev/zero")
    with pytest.raises(ConfigError, match="holds other files"):
        export_c(artifact, mine, compile_check=False)
    assert (mine / "Makefile").read_text() == "mine\n"


def test_the_cli_refuses_a_foreign_folder_in_one_line_and_forces(artifact: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    from fewbit.cli import main

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "Makefile").write_text("mine\n")
    assert main(["export", str(artifact), "--format", "c", "--out", str(mine)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--force" in err and (mine / "Makefile").read_text() == "mine\n"
    assert main(["export", str(artifact), "--format", "c", "--out", str(mine), "--force", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["out"] == str(mine)


def test_nothing_written_for_shipping_names_the_building_machine(artifact: Path, tmp_path: Path) -> None:
    out = (tmp_path / "deep" / "export").resolve()
    report = export_c(artifact, out, compile_check=False)
    assert report["out"] == str(out)  # returned to the caller, who asked for it
    for path in out.iterdir():  # sources, and the bare-metal image's task bytes
        data = path.read_bytes()
        assert str(tmp_path).encode() not in data and (str(Path.home()) + "/").encode() not in data, path.name
    saved = json.loads((out / "fewbit_report.json").read_text())
    assert "out" not in saved and saved["producer"].startswith("fewbit ")


def test_a_table_model_is_refused_in_one_line_naming_what_the_c_runtime_takes(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    from fewbit.cli import main
    from fewbit.models import mlp

    features = [f"f{i}" for i in range(6)]
    pre = {"kind": "table", "features": features, "mean": [0.0] * 6, "std": [1.0] * 6, "label_column": "label"}
    export(mlp(ways=0, in_features=6, hidden=(8,)), tmp_path / "t.fewbit", algorithm="protonet", preprocessing=pre)
    with pytest.raises(ConfigError, match="takes images .* 6 table features"):
        export_c(tmp_path / "t.fewbit", tmp_path / "c", compile_check=False)
    assert main(["export", str(tmp_path / "t.fewbit"), "--format", "c", "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fewbit: error: C export: the C runtime takes images") and err.count("\n") == 1
    assert not (tmp_path / "c").exists()


def test_class_names_in_classes_txt_stay_one_a_line(tmp_path: Path) -> None:
    """A folder's name may hold a newline; classes.txt keeps label i on line i + 1 whatever the names."""
    import numpy as np

    from fewbit.deploy.c_export import write_task_files

    names = ["plain", "two\nlines", "tab\there", "日本"]
    pixels = np.zeros((4, 1, 2, 2), np.uint8)
    write_task_files(tmp_path, pixels, np.arange(4), pixels[:1], classes=names)
    lines = (tmp_path / "classes.txt").read_text(encoding="utf-8").splitlines()
    assert lines == ["plain", "two\\nlines", "tab\\there", "日本"]
