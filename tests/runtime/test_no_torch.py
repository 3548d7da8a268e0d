"""`fewbit.runtime` loads, adapts and predicts without importing torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from fewbit.deploy import export
from tests.deploy.helpers import compressed_conv4, glyphs

SCRIPT = """
import sys
import numpy as np
import fewbit.runtime as rt
from fewbit.runtime.images import load_image_folder
model = rt.load(sys.argv[1])
data = np.load(sys.argv[2])
task = rt.adapt(model, data["sx"], data["sy"])
pred = task.predict(data["qx"])
task2 = rt.adapt(model, data["sx"], data["sy"], method="sgd", steps=2)
task2.predict(data["qx"])
assert "torch" not in sys.modules, sorted(m for m in sys.modules if m.startswith("torch"))
print("ok", pred.tolist())
"""


def test_runtime_never_imports_torch(tmp_path: Path) -> None:
    path = tmp_path / "m.fewbit"
    export(compressed_conv4("quant:w4a8", ways=0), path, algorithm="protonet")
    sx, sy = glyphs(3, 2, seed=1)
    qx, _ = glyphs(3, 2, seed=2)
    np.savez(tmp_path / "task.npz", sx=sx, sy=sy, qx=qx)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(path), str(tmp_path / "task.npz")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok")


LEAN = """
import sys
import fewbit.artifact
import fewbit.runtime
loaded = sorted(m for m in sys.modules if m.split(".")[0] == "torch" or m.startswith(("fewbit.cli", "fewbit.deploy",
                "fewbit.compress", "fewbit.meta", "fewbit.train", "fewbit.models")))
assert not loaded, loaded
print("ok")
"""


def test_runtime_and_artifact_import_only_the_artifact_format() -> None:
    """The runtime and the artifact package stand alone: no torch, no CLI, no torch-side package."""
    done = subprocess.run([sys.executable, "-c", LEAN], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
