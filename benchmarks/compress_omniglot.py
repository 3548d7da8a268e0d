"""Conv-4 on Omniglot background-small1, supervised over its 136 classes: float32 vs compressed.

Each class's 20 drawings are split 15 train / 5 test (seeded). A float32 Conv-4 is trained
`--epochs` with Adam; each compression spec is applied to a copy and fine-tuned
`--finetune-epochs` more with compression active (the float32 row gets the same extra epochs).
Reports test accuracy and the bytes the packed model stores (`size_report`). Needs
../shared/data/omniglot (or --data DIR holding images_background_small{1,2}.zip).

    nice python benchmarks/compress_omniglot.py     # -> benchmarks/results/compress_omniglot.json
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fewbit.compress import compress, size_report
from fewbit.data.sources import load_split
from fewbit.models import build_backbone

HERE = Path(__file__).resolve().parent
ROWS: list[tuple[str, str | None]] = [
    ("float32 (first phase only)", None),
    ("float32", ""),
    ("8-bit", "quant:w8"),
    ("4-bit", "quant:w4"),
    ("4-bit weights, 8-bit activations", "quant:w4a8"),
    ("2-bit", "quant:w2:mse"),
    ("50% pruned + 4-bit", "prune:0.5,quant:w4"),
    ("16-cluster", "cluster:16"),
]


def split(data: str, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images `[n, 1, 28, 28]` in [0, 1] and labels, 15 train / 5 test drawings per class."""
    ds = load_split(f"omniglot-minimal:{data}", "all")
    x = torch.tensor(ds.images).float().div(255.0).unsqueeze(1)
    y = torch.tensor(ds.labels)
    gen = torch.Generator().manual_seed(seed)
    train_idx, test_idx = [], []
    for c in range(ds.num_classes):
        idx = (y == c).nonzero().reshape(-1)
        idx = idx[torch.randperm(len(idx), generator=gen)]
        train_idx.append(idx[:15])
        test_idx.append(idx[15:])
    tr, te = torch.cat(train_idx), torch.cat(test_idx)
    return x[tr], y[tr], x[te], y[te]


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int) -> None:
    """Adam (lr 1e-3), batches of 64, seeded shuffling."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(64):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Test accuracy in percent; batches of 85 in a fixed shuffled order (batch-statistics BatchNorm)."""
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    correct = sum(int((model(x[i]).argmax(1) == y[i]).sum()) for i in order.split(85))
    return 100.0 * correct / len(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data" / "omniglot"))
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(HERE / "results" / "compress_omniglot.json"))
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    x_tr, y_tr, x_te, y_te = split(args.data, args.seed)
    base = build_backbone("conv4", ways=136, width=args.width)
    start = time.perf_counter()
    train(base, x_tr, y_tr, args.epochs, args.seed)
    rows: dict[str, Any] = {}
    for name, spec in ROWS:
        model = base if spec is None else copy.deepcopy(base) if not spec else compress(base, spec)
        if spec is not None:
            train(model, x_tr, y_tr, args.finetune_epochs, args.seed + 1000)
        report = size_report(model)
        rows[name] = {"spec": spec, "accuracy": accuracy(model, x_te, y_te), "bytes": report.bytes}
        print(f"{name:36s} {rows[name]['accuracy']:6.2f}% {report.bytes:9d} bytes", flush=True)
    out = {
        "benchmark": "compress_omniglot",
        "dataset": "omniglot background-small1, 136 classes, 15/5 per class",
        "model": f"Conv-4 (width {args.width})",
        "epochs": args.epochs,
        "finetune_epochs": args.finetune_epochs,
        "seed": args.seed,
        "rows": rows,
        "seconds": round(time.perf_counter() - start, 1),
        "torch": torch.__version__,
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
