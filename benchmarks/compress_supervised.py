"""The classic MLP 128-64-10 on scikit-learn's handwritten digits, float32 vs compressed.

For each of 3 seeds: a 75/25 stratified split, a float32 MLP trained 10 epochs with Adam, then
each compression spec applied to a copy of that float model and fine-tuned 10 more epochs with
compression active (quantization-aware training); the float32 row gets the same 10 more epochs.
Reports test accuracy (mean and std over seeds) and the bytes the packed model stores
(`size_report`, equal to what `convert` packs), beside the TensorFlow Model Optimization 0.8.1
reference rows measured for the issue, and the time of a QAT training step relative to a
float32 step (same run, interleaved blocks).

    nice python benchmarks/compress_supervised.py          # -> benchmarks/results/compress_supervised.json
    nice python benchmarks/compress_supervised.py --quick  # 1 seed, 2 epochs (a smoke run)
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fewbit.compress import compress, size_report, slim
from fewbit.models import build_backbone

HERE = Path(__file__).resolve().parent
# (name, spec, slim after training); the spec strings are fewbit's compact grammar. Every row but the
# first starts from the same float32 model trained `epochs` and trains `epochs` more (compression active).
ROWS: list[tuple[str, str | None, bool]] = [
    ("float32 (first half only)", None, False),
    ("float32", "", False),
    ("8-bit", "quant:w8", False),
    ("4-bit", "quant:w4:per_tensor", False),
    ("2-bit", "quant:w2:per_tensor:mse", False),
    ("50% pruned + 4-bit", "prune:0.5,quant:w4:per_tensor", False),
    ("16-cluster", "cluster:16", False),
    ("2-bit + 50% pruned", "prune:0.5,quant:w2:per_tensor:mse", False),
    ("2-bit + 2:4 pruned", "prune:2:4,quant:w2:per_tensor:mse", False),
    (
        "2-bit + 50% channels of hidden-1, slimmed",
        "prune:channel:0.5@features.1,quant:w2:per_tensor:mse",
        True,
    ),
]
# Measured for the issue with TensorFlow Model Optimization 0.8.1 (Keras 2), TFLite file bytes.
TFMOT = [
    ("tfmot float32", 96.7, 71016),
    ("tfmot 8-bit QAT", 96.9, 21248),
    ("tfmot 4-bit weight QAT", 96.4, 12744),
]


def load_digits_split(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Digits scaled to [0, 1], 75/25 stratified split with `seed`."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x_tr, x_te, y_tr, y_te = train_test_split(
        data.data, data.target, test_size=0.25, stratify=data.target, random_state=seed
    )
    as_x = lambda a: torch.tensor(a, dtype=torch.float32) / 16.0  # noqa: E731
    as_y = lambda a: torch.tensor(a, dtype=torch.long)  # noqa: E731
    return as_x(x_tr), as_y(y_tr), as_x(x_te), as_y(y_te)


def train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    seed: int,
    lr: float = 1e-3,
    batch_size: int = 32,
) -> None:
    """Adam on shuffled mini-batches (shuffling seeded)."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch_size):
            idx = order[i : i + batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Test accuracy in percent."""
    model.eval()
    return 100.0 * float((model(x).argmax(1) == y).float().mean())


def step_time_ratio(
    float_model: nn.Module,
    qat_model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    blocks: int = 9,
    steps: int = 40,
    batch_size: int = 32,
) -> dict[str, float]:
    """Median time of one Adam training step, QAT vs float32, measured in interleaved blocks."""
    xb, yb = x[:batch_size], y[:batch_size]

    def block(model: nn.Module, opt: torch.optim.Optimizer) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return (time.perf_counter() - start) / steps

    models = {"float32": copy.deepcopy(float_model), "qat": copy.deepcopy(qat_model)}
    opts = {k: torch.optim.Adam(m.parameters(), lr=1e-4) for k, m in models.items()}
    times: dict[str, list[float]] = {k: [] for k in models}
    for k in models:  # warm-up
        block(models[k], opts[k])
    for _ in range(blocks):
        for k in models:
            times[k].append(block(models[k], opts[k]))
    f, q = statistics.median(times["float32"]), statistics.median(times["qat"])
    return {"float32_step_ms": 1e3 * f, "qat_step_ms": 1e3 * q, "ratio": q / f}


def run(seeds: list[int], epochs: int) -> dict[str, Any]:
    """Every row for every seed; returns the JSON-able results."""
    torch.set_num_threads(1)
    results: dict[str, dict[str, Any]] = {
        name: {"spec": spec, "accuracy": [], "bytes": None} for name, spec, _ in ROWS
    }
    timing: dict[str, float] = {}
    for seed in seeds:
        x_tr, y_tr, x_te, y_te = load_digits_split(seed)
        torch.manual_seed(seed)
        base = build_backbone("mlp", ways=10, in_features=64, hidden=(128, 64))
        train(base, x_tr, y_tr, epochs=epochs, seed=seed)
        for name, spec, do_slim in ROWS:
            model = base if spec is None else copy.deepcopy(base) if not spec else compress(base, spec)
            if spec is not None:
                train(model, x_tr, y_tr, epochs=epochs, seed=seed + 1000)
            if do_slim:
                model = slim(model)
            results[name]["accuracy"].append(accuracy(model, x_te, y_te))
            results[name]["bytes"] = size_report(model).bytes
            results[name]["params"] = size_report(model).params
        if seed == seeds[0]:
            timing = step_time_ratio(base, compress(base, "quant:w4:per_tensor"), x_tr, y_tr)
    for row in results.values():
        acc = row["accuracy"]
        row["accuracy_mean"] = statistics.mean(acc)
        row["accuracy_std"] = statistics.stdev(acc) if len(acc) > 1 else 0.0
    f32 = results["float32"]
    slimmed = results["2-bit + 50% channels of hidden-1, slimmed"]
    unstructured = results["2-bit + 50% pruned"]
    targets = {
        "4-bit within 1 point of float32": f32["accuracy_mean"] - results["4-bit"]["accuracy_mean"] <= 1.0,
        "4-bit <= 9500 bytes": results["4-bit"]["bytes"] <= 9500,
        "2-bit + 50% pruned (unstructured) >= 95%": unstructured["accuracy_mean"] >= 95.0,
        "2-bit + 50% pruned (unstructured) <= 4000 bytes": unstructured["bytes"] <= 4000,
        "2-bit + 50% channels, slimmed >= 95%": slimmed["accuracy_mean"] >= 95.0,
        "2-bit + 50% channels, slimmed <= 4000 bytes": slimmed["bytes"] <= 4000,
        "QAT step <= 1.5x float32": timing.get("ratio", 99.0) <= 1.5,
    }
    return {
        "benchmark": "compress_supervised",
        "dataset": "sklearn digits (8x8), 75/25 stratified",
        "model": "MLP 64-128-64-10",
        "epochs": epochs,
        "seeds": seeds,
        "optimizer": "Adam lr 1e-3, batch 32",
        "protocol": "float32 trained `epochs`, then each row fine-tuned `epochs` more (compression active)",
        "rows": results,
        "reference_tfmot": [{"name": n, "accuracy": a, "bytes": b} for n, a, b in TFMOT],
        "qat_step_time": timing,
        "targets": targets,
        "torch": torch.__version__,
    }


def print_table(out: dict[str, Any]) -> None:
    """The rows beside the TFMOT reference rows."""
    print(f"{'model':52s} {'accuracy %':>14s} {'bytes':>8s}")
    for name, row in out["rows"].items():
        print(f"fewbit {name:45s} {row['accuracy_mean']:8.2f} ±{row['accuracy_std']:4.2f} {row['bytes']:8d}")
    for ref in out["reference_tfmot"]:
        print(f"{ref['name']:52s} {ref['accuracy']:8.1f}       {ref['bytes']:8d}")
    t = out["qat_step_time"]
    if t:
        print(
            f"QAT step {t['qat_step_ms']:.3f} ms vs float32 {t['float32_step_ms']:.3f} ms: {t['ratio']:.2f}x"
        )
    for name, ok in out["targets"].items():
        print(f"  [{'ok' if ok else 'MISSED'}] {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, 2 epochs")
    parser.add_argument("--out", default=str(HERE / "results" / "compress_supervised.json"))
    args = parser.parse_args()
    seeds, epochs = ([0], 2) if args.quick else ([0, 1, 2], 10)
    out = run(seeds, epochs)
    print_table(out)
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
