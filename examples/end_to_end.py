"""fewbit end to end: a compressed model that learns new characters from one example each.

    python examples/end_to_end.py            # about 5 minutes on 2 CPU cores
    python examples/end_to_end.py --steps 20 --tasks 50   # a quick look

1. data      the embedded glyphs set: characters of 28 Unicode blocks, alphabet-disjoint splits
2. model     Conv-4, compressed to 4-bit weights and 8-bit activations *before* meta-training
3. learn     Prototypical Networks, with the compression active in every forward pass
4. evaluate  5-way 1-shot accuracy with its 95% interval on held-out alphabets
5. size      bytes as stored, layer by layer
6. ship      a .fewbit artifact, loaded by the numpy-only runtime, adapted to a new task there
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

import fewbit.runtime
from fewbit.compress import size_report
from fewbit.data import load_source
from fewbit.deploy import export
from fewbit.evaluation import eval_tasks, evaluate
from fewbit.report import size_table
from fewbit.train import TrainConfig, meta_train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="outer meta-training steps")
    parser.add_argument("--tasks", type=int, default=600, help="test tasks for the accuracy")
    parser.add_argument("--out", default=None, help="where the run and artifact go (default: a temp folder)")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="fewbit-example-"))

    # 1. data: meta-train on some alphabets, test on alphabets the model never saw
    source = load_source("glyphs")
    test = source.split("test")
    print(f"glyphs: {source.split('train').num_classes} train classes, {test.num_classes} test classes "
          f"in {len(test.alphabets)} unseen alphabets")

    # 2 + 3. compress, then meta-train with the compression in the loop (the model that learns ships)
    config = TrainConfig.from_dict({
        "dataset": "glyphs", "backbone": "conv4", "algorithm": "protonet", "compress": "quant:w4a8",
        "ways": 5, "shots": 1, "queries": 10, "meta_batch": 4, "steps": args.steps, "outer_lr": 1e-3,
        "schedule": "cosine", "val_every": max(1, args.steps // 3), "val_tasks": 50, "seed": 0,
    })
    run = meta_train(config, out / "run")

    # 4. evaluate: the same seeded tasks for every model, so numbers compare
    result = evaluate(run.predictor(), test, ways=5, shots=1, queries=15, tasks=args.tasks, device=run.device)
    print(result)

    # 5. size in real bytes: packed 4-bit codes, scales, activation scales
    report = size_report(run.model)
    print(size_table(report))
    print(f"{report.bytes:,} bytes as stored, {report.ratio:.1f}x smaller than float32")

    # 6. ship: write the artifact, then adapt and predict with numpy alone
    artifact = out / "model.fewbit"
    export(run.model, artifact, algorithm="protonet")
    device_model = fewbit.runtime.load(artifact)
    task = next(iter(eval_tasks(test, ways=5, shots=1, queries=15, tasks=1, seed=2026, batch=1)))
    adapted = fewbit.runtime.adapt(device_model, task.support_x[0].numpy(), task.support_y[0].numpy())
    on_device = adapted.predict(task.query_x[0].numpy())
    with torch.no_grad():
        in_torch = run.predictor()(task.to(run.device)).argmax(-1)[0].cpu().numpy()
    accuracy = float(np.mean(on_device == task.query_y[0].numpy()))
    agree = float(np.mean(on_device == in_torch))
    print(f"artifact {artifact.stat().st_size:,} bytes; on-device accuracy on a new task {accuracy:.0%}; "
          f"agrees with PyTorch on {agree:.0%} of queries")


if __name__ == "__main__":
    main()
