import subprocess
import sys


def test_import_fewbit_is_lean_and_has_no_side_effects(tmp_path):
    code = (
        "import sys, logging, warnings\n"
        "before = (logging.root.level, len(logging.root.handlers), list(warnings.filters))\n"
        "import fewbit\n"
        "after = (logging.root.level, len(logging.root.handlers), list(warnings.filters))\n"
        "assert before == after, 'import fewbit changed logging or warnings'\n"
        "heavy = [m for m in ('torch', 'numpy', 'matplotlib') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "print(fewbit.__version__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert list(tmp_path.iterdir()) == []


def test_lazy_entry_points_resolve():
    import fewbit

    assert callable(fewbit.evaluate)
    assert callable(fewbit.build_backbone)
