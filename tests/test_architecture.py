"""The shape of the code: dependencies point one way and knowledge lives with its owner.

Read from the source, so a new module is checked as soon as it exists: no import cycles (an
import inside a function counts, one under `if TYPE_CHECKING:` does not), nothing below the CLI
imports it, and algorithm names are written as strings only in `fewbit.meta` (which owns the
algorithms) and the CLI (whose choices list them).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from fewbit.meta import algorithm_names

SRC = Path(__file__).resolve().parents[1] / "src" / "fewbit"
# Format 1 artifacts named their adaptation methods "protonet"/"finetune"; the reader upgrades them.
LEGACY_METHOD_NAMES = {("artifact/format.py", "protonet"), ("artifact/format.py", "finetune")}


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The fewbit modules `module` imports (anywhere in it, except type-checking-only imports)."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                head = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(head + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in modules else base)
    return {m for m in found if m in modules and m != module}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imports(m, p, modules) for m, p in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_module_imports_a_module_that_imports_it_back() -> None:
    graph = _graph()
    assert len(graph) > 80  # the walk found the package
    assert _cycles(graph) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_nothing_below_the_cli_imports_it() -> None:
    graph = _graph()
    offenders = {m: sorted(i for i in deps if i.startswith("fewbit.cli"))
                 for m, deps in graph.items() if not m.startswith("fewbit.cli") and m != "fewbit.__main__"}
    assert {m: d for m, d in offenders.items() if d} == {}


def test_the_runtime_and_artifact_packages_import_neither_torch_nor_the_cli() -> None:
    code = ("import sys, fewbit.runtime, fewbit.runtime.images, fewbit.runtime.tables, fewbit.artifact; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'torch' or m.startswith('fewbit.cli') "
            "or m.startswith(('fewbit.meta', 'fewbit.train', 'fewbit.compress'))); print(bad)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_algorithm_names_are_strings_only_in_meta_and_the_cli() -> None:
    names = set(algorithm_names())
    assert {"protonet", "maml", "anil"} <= names
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith(("meta/", "cli/")):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in names and (rel, node.value) not in LEGACY_METHOD_NAMES:
                found.append(f"{rel}:{node.lineno} {node.value!r}")
    assert found == []
