"""A large folder (20,000 RGB images at 84x84) is decoded into a memory-mapped cache and trained on
without a copy in RAM: peak RSS stays below twice the uint8 size of the data (a float copy alone
would be four times it). The training task is kept small (5-way 1-shot, 3 queries, one task per
step) so that what is measured is the data, not the activations of a large meta-batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CLASSES, PER_CLASS, SIZE = 200, 100, 84
DATA_BYTES = CLASSES * PER_CLASS * 3 * SIZE * SIZE  # 423,360,000


def _write_folder(root: Path) -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    for c in range(CLASSES):
        folder = root / f"class{c:03d}"
        folder.mkdir(parents=True)
        colour = rng.integers(30, 225, 3)
        period = rng.uniform(5, 12)
        base = (np.sin((xx + yy * rng.uniform(-1, 1)) * 2 * np.pi / period)[..., None] * 30 + colour).astype(np.uint8)
        for i in range(PER_CLASS):
            Image.fromarray(np.roll(base, i % SIZE, axis=1)).save(folder / f"{i:03d}.png", compress_level=1)


SCRIPT = textwrap.dedent(
    """
    import json, resource, sys
    import torch
    torch.set_num_threads(1)  # per-thread scratch of the convolutions is not what is measured
    from fewbit.data import ImageOptions, load_source
    from fewbit.train import TrainConfig, meta_train

    spec, out = sys.argv[1], sys.argv[2]
    source = load_source(spec, options=ImageOptions(image_size=84), progress=False)
    train = source.split("train")
    config = TrainConfig(dataset=spec, data=ImageOptions(image_size=84), ways=5, shots=1, queries=3, meta_batch=1,
                         steps=3, val_every=0, checkpoint_every=0, device="cpu")
    meta_train(config, out, progress=False)
    # VmHWM: the peak RSS of this process's own memory. (ru_maxrss would not do: exec keeps the
    # high-water mark of the image it replaced, so it reports the pytest process when that is larger.)
    hwm = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    print(json.dumps({"images": source.split("all").num_images, "channels": train.channels,
                      "peak_rss": hwm,
                      "children_peak_rss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024}))
    """
)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads the peak RSS from /proc (Linux)")
def test_a_large_colour_folder_trains_without_a_copy_in_ram(tmp_path: Path) -> None:
    _write_folder(tmp_path / "big")
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    env.update(FEWBIT_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, f"folder:{tmp_path / 'big'}", str(tmp_path / "run")],
        capture_output=True, text=True, env=env, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["images"] == CLASSES * PER_CLASS and result["channels"] == 3
    assert result["peak_rss"] < 2 * DATA_BYTES, f"peak RSS {result['peak_rss'] / 2**20:.0f} MiB"
    assert result["children_peak_rss"] < 2 * DATA_BYTES
