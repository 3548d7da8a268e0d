"""Is the data pipeline a bottleneck? Time to draw one step's data against one whole training step.

For each setting: the median milliseconds of drawing one outer step's data with the sampler the
trainer uses (tasks or a labelled batch, rotations and augmentation included), and the median
milliseconds of whole training steps (sampling, forward, backward, Adam) from a short run of the
same config, measured in one process, one setting after the other. The ratio is the share of a
step spent waiting for data.

    nice python benchmarks/data_pipeline.py --data ../shared/data/omniglot
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from fewbit._io import atomic_write_json
from fewbit.data.sources import load_source
from fewbit.meta import ALGORITHMS
from fewbit.train import TrainConfig, meta_train
from fewbit.train.samplers import training_sampler

ROOT = Path(__file__).resolve().parent.parent
SETTINGS: dict[str, dict[str, Any]] = {
    "pretrain-batch128-w4a8 (configs/omniglot.yaml)": {
        "algorithm": "finetune", "batch_size": 128, "augment": "glyph", "compress": "quant:w4a8"},
    "protonet-5way-meta16-w4a8": {"algorithm": "protonet", "meta_batch": 16, "augment": "glyph",
                                  "compress": "quant:w4a8"},
    "protonet-20way-meta4-w4a8": {"algorithm": "protonet", "ways": 20, "queries": 5, "meta_batch": 4,
                                  "augment": "glyph", "compress": "quant:w4a8"},
}


def sample_ms(config: TrainConfig, draws: int) -> float:
    source = load_source(config.dataset, options=config.data, progress=False)
    train = source.split("train")
    episodic = ALGORITHMS[config.algorithm].episodic
    sampler = training_sampler(config, train, episodic=episodic, generator=torch.Generator().manual_seed(0))

    def draw() -> Any:  # one outer step's data, as the trainer draws it
        return sampler.sample(config.meta_batch) if episodic else sampler.sample()

    draw()
    times = []
    for _ in range(draws):
        t0 = time.perf_counter()
        draw()
        times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


def step_ms(config: TrainConfig, work: Path) -> float:
    times: list[float] = []
    last = [time.perf_counter()]

    def on_step(record: dict[str, Any]) -> None:
        now = time.perf_counter()
        times.append(1000 * (now - last[0]))
        last[0] = now

    meta_train(config, work, progress=False, on_step=on_step)
    return statistics.median(times[2:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "omniglot"))
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--draws", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "data_pipeline.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec = f"omniglot-minimal:{Path(args.data).resolve()}"
    rows = []
    for name, settings in SETTINGS.items():
        config = TrainConfig.from_dict({"dataset": spec, "backbone": "conv4", "rotations": True, "steps": args.steps,
                                        "val_every": 0, "checkpoint_every": 0, "device": "cpu", **settings})
        work = Path(tempfile.mkdtemp(prefix="fewbit-pipeline-"))
        try:
            step = step_ms(config, work / "run")
        finally:
            shutil.rmtree(work, ignore_errors=True)
        sample = sample_ms(config, args.draws)
        rows.append({"setting": name, "sample_ms": round(sample, 2), "step_ms": round(step, 1),
                     "data_share": round(sample / step, 4)})
        print(f"{name}: data {sample:.1f} ms of a {step:.0f} ms step ({100 * sample / step:.1f}%)", flush=True)
    atomic_write_json(args.out, {"benchmark": "data_pipeline", "dataset": spec, "torch": torch.__version__,
                                 "threads": args.threads, "machine": platform.processor() or platform.machine(),
                                 "rows": rows})


if __name__ == "__main__":
    main()
