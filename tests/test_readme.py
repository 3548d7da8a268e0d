"""README.md runs as written: every shell command and Python snippet in its code blocks is run, in
order, in one workspace laid out as a clone is (`../shared/data/omniglot` beside it, `configs/`),
so a command that fails or a snippet with an undefined name fails here.

Work is shrunk, not skipped: `--steps` becomes 2 (and is added to a `train` without it), `--tasks`
and a sweep's `--eval-tasks` 5 (and `"steps": N`, `tasks=N` in Python). Commands that install, run
the whole suite, distribute or benchmark for hours are listed in NOT_RUN with the test that covers
them instead; a new README command runs unless it is added there. Commands on the real Omniglot
zips skip when they are absent, the C ones without a compiler, the emulated Cortex-M4 ones without
the cross compiler and QEMU. A command's comment `exit code N` is the status it must end with.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import random
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import character_strokes, draw_character

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SHARED = ROOT.parent / "shared"
OMNIGLOT = SHARED / "data" / "omniglot"

NOT_RUN = {  # command prefix -> why, and what runs it instead
    "make demo": "the full demo (tests/test_demo.py runs it small)",
    "make test": "this very suite",
    "python3 -m venv": "installs packages",
    ".venv/bin/pip": "installs packages",
    "torchrun": "distributed training (tests/train/test_distributed.py)",
    "python benchmarks/": "a benchmark of minutes to hours, run by hand (it writes benchmarks/results/*.json)",
}
SLOW = ("fewbit sweep", "make -C model_c qemu", "--mcu", "fewbit search", "search(config")  # minutes: pytest -m slow
SMALL = {"--steps": "2", "--tasks": "5", "--eval-tasks": "5", "--episodes": "2", "--rerank-steps": "2",
         "--pilot-steps": "2"}


@dataclasses.dataclass(frozen=True)
class Snippet:
    """One command of a `bash` block (continuations joined, comment kept apart) or a whole `python` block."""

    lang: str
    line: int
    text: str
    comment: str = ""

    @property
    def id(self) -> str:
        return f"L{self.line}-{re.sub(r'[^A-Za-z0-9]+', '-', self.text[:40]).strip('-')}"


def readme_snippets(text: str) -> list[Snippet]:
    """Every command of the README's bash blocks and every python block, in order."""
    out = []
    for block in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.S | re.M):
        lang, body = block.group(1), block.group(2)
        first = text[: block.start()].count("\n") + 2
        if lang == "python":
            out.append(Snippet("python", first, body))
        elif lang in ("bash", "sh"):
            lines = body.split("\n")
            i = 0
            while i < len(lines):
                start, line = i, lines[i]
                while line.rstrip().endswith("\\") and i + 1 < len(lines):
                    i += 1
                    line = line.rstrip()[:-1] + " " + lines[i].strip()
                i += 1
                command, _, comment = line.partition(" #")
                if command.strip() and not command.lstrip().startswith("#"):
                    out.append(Snippet("bash", first + start, command.strip(), comment.strip()))
    return out


SNIPPETS = readme_snippets(README.read_text(encoding="utf-8"))


def _param(snippet: Snippet) -> object:
    slow = any(s in snippet.text for s in SLOW)
    return pytest.param(snippet, id=snippet.id, marks=[pytest.mark.slow] if slow else [])


def test_the_readme_has_commands_and_snippets() -> None:
    langs = {s.lang for s in SNIPPETS}
    assert langs == {"bash", "python"} and len(SNIPPETS) > 30


# -- the workspace: a clone with the files the README's commands name --------------------------------


def _strokes(root: Path, classes: int, per_class: int, seed: int) -> None:
    rng = random.Random(seed)
    for c in range(classes):
        strokes = character_strokes(rng)
        (root / f"char{c}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            draw_character(rng, strokes=strokes).save(root / f"char{c}" / f"{i}.png")


def _table(path: Path, classes: int, rows: int, seed: int, labelled: bool = True) -> None:
    rng = np.random.default_rng(seed)
    lines = ["f1,f2,f3,f4" + (",activity" if labelled else "")]
    for c in range(classes):
        centre = rng.normal(0, 3, 4)
        for _ in range(rows):
            values = ",".join(f"{v:.4f}" for v in centre + rng.normal(0, 0.5, 4))
            lines.append(values + (f",act{c}" if labelled else ""))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    from fewbit.data.synthetic import write_image_folder, write_series_folder

    base = tmp_path_factory.mktemp("readme")
    clone = base / "clone"
    clone.mkdir()
    (clone / "configs").symlink_to(ROOT / "configs")
    if SHARED.is_dir():
        (base / "shared").symlink_to(SHARED)
    for name in ("support", "s", "task/support"):
        _strokes(clone / name, classes=3, per_class=1, seed=1)
    for name in ("query", "q", "task/query"):
        _strokes(clone / name, classes=3, per_class=2, seed=1)
    write_image_folder(clone / "my_images", classes=40, images_per_class=10, size=60, formats=("png", "jpg"))
    write_series_folder(clone / "my_signals", classes=20, per_class=10, channels=3)
    write_series_folder(clone / "signals_task", classes=3, per_class=3, channels=3, seed=1)
    for c in sorted(p.name for p in (clone / "signals_task").iterdir()):
        files = sorted((clone / "signals_task" / c).iterdir())
        for where, picked in (("new_support", files[:1]), ("new_query", files[1:])):
            (clone / where / c).mkdir(parents=True)
            for f in picked:
                shutil.copy(f, clone / where / c / f.name)
    _table(clone / "readings.csv", classes=15, rows=20, seed=0)
    _table(clone / "support.csv", classes=3, rows=2, seed=1)
    _table(clone / "query.csv", classes=3, rows=3, seed=1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FEWBIT_CACHE", str(base / "cache"))
        mp.setenv("OMP_NUM_THREADS", "1")
        mp.chdir(clone)
        yield clone


# -- running one -----------------------------------------------------------------------------------


def shrink(argv: list[str]) -> list[str]:
    """`argv` with its work cut to a smoke test's (SMALL), an eval's task count included."""
    out = list(argv)
    for i, arg in enumerate(out[:-1]):
        if arg in SMALL:
            out[i + 1] = SMALL[arg]
    if out[:2] == ["fewbit", "eval"] and "--tasks" not in out:
        out += ["--tasks", SMALL["--tasks"]]
    if out[:2] == ["fewbit", "train"] and "--steps" not in out and "--config" not in out:
        out += ["--steps", SMALL["--steps"]]  # own data's default, --steps auto, trains for minutes
    if out[:2] == ["fewbit", "sweep"] and "--eval-tasks" not in out:
        out += ["--eval-tasks", SMALL["--eval-tasks"]]
    return out


def _needs(snippet: Snippet) -> None:
    """Skip when what the command needs is absent."""
    for prefix, why in NOT_RUN.items():
        if snippet.text.startswith(prefix):
            pytest.skip(f"not run here: {why}")
    needs_omniglot = "../shared/data/omniglot" in snippet.text or re.search(r"configs/\S*omniglot", snippet.text)
    if needs_omniglot and not (OMNIGLOT / "images_background_small1.zip").is_file():
        pytest.skip(f"the real Omniglot zips are not at {OMNIGLOT}")
    if (snippet.text.startswith(("make ", "model_c/")) or "--format c" in snippet.text) and not shutil.which("cc"):
        pytest.skip("no C compiler")
    if ("qemu" in snippet.text or "--mcu" in snippet.text) and not (
        shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")
    ):
        pytest.skip("no arm-none-eabi-gcc and qemu-system-arm")


def _run_fewbit(argv: list[str]) -> tuple[int, str]:
    from fewbit.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv[1:])
    return code, err.getvalue()


def _python(text: str) -> str:
    text = re.sub(r'"(steps|episodes|rerank_steps|pilot_steps)": \d+', r'"\1": 2', text)
    return re.sub(r"\btasks=\d+", "tasks=5", text)


@pytest.mark.parametrize("snippet", [_param(s) for s in SNIPPETS])
def test_readme_snippet_runs(snippet: Snippet, workspace: Path) -> None:
    _needs(snippet)
    if snippet.lang == "python":
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(_python(snippet.text), f"README.md:{snippet.line}", "exec"), {"__name__": "readme"})
        return
    argv = shrink(shlex.split(snippet.text))
    expected = re.search(r"exit code (\d+)", snippet.comment)
    want = int(expected.group(1)) if expected else 0
    if argv[0] == "fewbit":
        code, err = _run_fewbit(argv)
    else:
        done = subprocess.run(argv, cwd=workspace, capture_output=True, text=True, timeout=600,
                              env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable})
        code, err = done.returncode, done.stderr[-2000:] + done.stdout[-2000:]
    assert code == want, f"README.md:{snippet.line}: `{snippet.text}` exited {code}, not {want}:\n{err}"


def test_shrink_cuts_the_work_and_keeps_the_rest() -> None:
    assert shrink(["fewbit", "train", "--steps", "300", "--out", "r"]) == ["fewbit", "train", "--steps", "2",
                                                                         "--out", "r"]
    assert shrink(["fewbit", "eval", "r"])[-2:] == ["--tasks", "5"]
    assert shrink(["fewbit", "train", "--dataset", "folder:d"])[-2:] == ["--steps", "2"]
    assert _python('{"steps": 300} f(tasks=600)') == '{"steps": 2} f(tasks=5)'


def test_a_broken_snippet_would_fail(workspace: Path) -> None:
    """The checks can fail: an undefined name, and a command that exits 2."""
    with pytest.raises(NameError):
        exec(compile("labels = support_x", "README.md", "exec"), {})
    code, err = _run_fewbit(["fewbit", "eval", "--model", "no-such-model", "--dataset", "glyphs"])
    assert code == 2 and "fewbit: error:" in err
