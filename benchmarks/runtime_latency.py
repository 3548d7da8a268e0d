"""Deployment benchmark: artifact bytes of Conv-4, and the numpy runtime's single-thread latency
and peak memory when adapting on the device, side by side with PyTorch float32 in the same run.

    nice python benchmarks/runtime_latency.py            # writes benchmarks/results/runtime_latency.json

Task: 5-way 1-shot, 75 queries (15 per class), 28x28 greyscale strokes, Conv-4 (ProtoNet body,
no head). Latency = adapt + classify all 75 queries, median of `--repeats` runs after warm-up,
each side in its own subprocess pinned to one thread (OMP/OPENBLAS/MKL set before numpy loads).
Both wall-clock and process CPU time are reported: on a shared machine the CPU time is the
better estimate of an idle core. The runtime subprocess checks that torch was never imported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "runtime_latency.json"
TARGETS = {"4bit_bytes": 60_000, "2bit_75sparse_bytes": 15_000, "protonet_ms": 20.0}
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def strokes(classes: int, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 `[classes*per_class, 1, 28, 28]` stroke images (ink = 1) and labels."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for c in range(classes):
        proto = np.zeros((28, 28), np.float32)
        for _ in range(3):
            r, c0 = rng.integers(3, 25, 2)
            length = rng.integers(7, 14)
            if rng.random() < 0.5:
                proto[r, c0 : c0 + length] = 1
            else:
                proto[r : r + length, c0] = 1
        for _ in range(per_class):
            img = np.roll(proto, tuple(rng.integers(-1, 2, 2)), axis=(0, 1))
            xs.append(np.clip(img + 0.1 * rng.random((28, 28), dtype=np.float32), 0, 1))
            ys.append(c)
    return np.stack(xs)[:, None].astype(np.float32), np.asarray(ys, np.int64)


def task(seed: int, ways: int = 5, shots: int = 1, queries: int = 15) -> tuple[np.ndarray, ...]:
    x, y = strokes(ways, shots + queries, seed)
    first = np.arange(len(y)) % (shots + queries) < shots
    return x[first], y[first], x[~first], y[~first]


# ------------------------------------------------------------------------------------- artifacts


def build_artifacts(folder: Path) -> list[dict]:
    """Conv-4 ProtoNet bodies, compressed several ways, exported; bytes and agreement with PyTorch."""
    import torch

    import fewbit.runtime as rt
    from fewbit.compress import calibrate, compress_, size_report, slim
    from fewbit.deploy import export
    from fewbit.meta.protonet import proto_logits, prototypes
    from fewbit.models import conv4

    torch.set_num_threads(1)
    calib, _ = strokes(10, 4, seed=100)

    def make(spec: str | None, channel_slim: bool = False) -> torch.nn.Module:
        torch.manual_seed(0)
        model = conv4(ways=0)
        if channel_slim:  # drop half the output channels of every conv: 75% of the conv weights go
            compress_(model, "prune:channel:0.5@features.*")
            model = slim(model)
        if spec:
            compress_(model, spec)
            calibrate(model, [torch.from_numpy(calib)])
        return model.eval()

    variants = [
        ("float32", None, False),
        ("4-bit (w4)", "quant:w4", False),
        ("4-bit weights, 8-bit activations (w4a8)", "quant:w4a8", False),
        ("2-bit + 75% unstructured sparse", "prune:0.75,quant:w2", False),
        ("2-bit + 75% of conv weights removed (channel prune 50% + slim)", "quant:w2", True),
    ]
    rows = []
    for label, spec, channel_slim in variants:
        model = make(spec, channel_slim)
        path = folder / f"conv4-{len(rows)}.fewbit"
        info = export(model, path, algorithm="protonet")
        runtime = rt.load(path)
        agree = total = 0
        worst = 0.0
        for seed in range(8):  # 8 tasks x 5-way x 25 queries = 1,000 queries
            sx, sy, qx, _ = task(seed, queries=25)
            with torch.no_grad():
                z = model(torch.cat([torch.from_numpy(sx), torch.from_numpy(qx)]), embed=True)
                ref = proto_logits(z[None, 5:], prototypes(z[None, :5], torch.from_numpy(sy)[None], 5))[
                    0
                ].numpy()
            out = rt.adapt(runtime, sx, sy).logits(qx)
            agree += int((out.argmax(1) == ref.argmax(1)).sum())
            total += len(out)
            worst = max(worst, float(np.abs(out - ref).max() / np.abs(ref).max()))
        rows.append(
            {
                "variant": label,
                "spec": spec,
                "slimmed": channel_slim,
                "path": str(path),
                "bytes": info["bytes"],
                "size_report_bytes": size_report(model).bytes if spec else None,
                "float32_bytes_conv4": 0,
                "agreement_1000_queries": agree / total,
                "max_relative_logit_error": worst,
            }
        )
    f32 = rows[0]["bytes"]
    for r in rows:
        r["float32_bytes_conv4"] = f32
        r["ratio_to_float32"] = f32 / r["bytes"]
    return rows


# --------------------------------------------------------------------------------------- timing

RUNTIME_SCRIPT = r"""
import json, os, resource, sys, time, tracemalloc
import numpy as np
sys.path.insert(0, os.path.dirname(sys.argv[1]))
from runtime_latency import task
from timing import clock
import fewbit.runtime as rt

paths, repeats = json.loads(sys.argv[2]), int(sys.argv[3])
sx, sy, qx, qy = task(0)

out = {}
for name, path in paths.items():
    t0 = time.perf_counter()
    model = rt.load(path)
    load_ms = 1e3 * (time.perf_counter() - t0)
    proto = clock(lambda: rt.adapt(model, sx, sy).predict(qx), repeats)
    tune = clock(lambda: rt.adapt(model, sx, sy, method="sgd", steps=5, lr=0.01).predict(qx), repeats)
    tracemalloc.start()
    pred = rt.adapt(model, sx, sy).predict(qx)
    proto_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.reset_peak()
    tuned = rt.adapt(model, sx, sy, method="sgd", steps=5, lr=0.01).predict(qx)
    tune_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    out[name] = {"load_ms": load_ms, "protonet": proto, "finetune_5_steps": tune,
                 "protonet_peak_bytes": proto_peak, "finetune_peak_bytes": tune_peak,
                 "protonet_accuracy": float((pred == qy).mean()),
                 "finetune_accuracy": float((tuned == qy).mean())}

# peak resident memory of this process (VmHWM: ru_maxrss would carry the parent's peak across exec),
# read before the GEMM probe below
try:
    status = open("/proc/self/status").read()
    out["_max_rss_kib"] = int(status.split("VmHWM:")[1].split()[0])
except (OSError, IndexError, ValueError):
    out["_max_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
a = np.random.default_rng(0).integers(-8, 8, (15680, 576)).astype(np.float32)
b = np.random.default_rng(1).integers(-8, 8, (576, 64)).astype(np.float32)
t = time.process_time(); a @ b; f32 = time.process_time() - t
ai, bi = a.astype(np.int32), b.astype(np.int32)
t = time.process_time(); ai @ bi; i32 = time.process_time() - t
out["_gemm_layer2"] = {"float32_blas_cpu_ms": 1e3 * f32, "int32_numpy_cpu_ms": 1e3 * i32}
out["_torch_imported"] = "torch" in sys.modules
print(json.dumps(out))
"""

TORCH_SCRIPT = r"""
import json, os, sys
import torch
sys.path.insert(0, os.path.dirname(sys.argv[1]))
from runtime_latency import task
from timing import clock
from fewbit.models import conv4
from fewbit.meta.protonet import prototypes, proto_logits

torch.set_num_threads(1)
repeats = int(sys.argv[3])
torch.manual_seed(0)
model = conv4(ways=0).eval()
sx, sy, qx, qy = (torch.from_numpy(a) for a in task(0))

def protonet():
    with torch.no_grad():
        z = model(torch.cat([sx, qx]), embed=True)
        return proto_logits(z[None, 5:], prototypes(z[None, :5], sy[None], 5))[0].argmax(1)

def finetune():
    with torch.no_grad():
        zs, zq = model(sx, embed=True), model(qx, embed=True)
        protos = prototypes(zs[None], sy[None], 5)[0]
    w = (2 * protos).requires_grad_()
    b = (-(protos ** 2).sum(1)).requires_grad_()
    for _ in range(5):
        loss = torch.nn.functional.cross_entropy(zs @ w.T + b, sy)
        gw, gb = torch.autograd.grad(loss, [w, b])
        w = (w - 0.01 * gw).detach().requires_grad_()
        b = (b - 0.01 * gb).detach().requires_grad_()
    with torch.no_grad():
        return (zq @ w.T + b).argmax(1)

print(json.dumps({"protonet": clock(protonet, repeats), "finetune_5_steps": clock(finetune, repeats),
                  "threads": torch.get_num_threads(), "torch": torch.__version__}))
"""


def run_timed(script: str, paths: dict[str, str], repeats: int) -> dict:
    env = dict(os.environ, **ONE_THREAD)
    done = subprocess.run(
        [sys.executable, "-c", script, str(Path(__file__).resolve()), json.dumps(paths), str(repeats)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        rows = build_artifacts(Path(tmp))
        timed = {r["variant"]: r["path"] for r in rows}
        runtime = run_timed(RUNTIME_SCRIPT, timed, args.repeats)
        torch_f32 = run_timed(TORCH_SCRIPT, {}, args.repeats)
    for r in rows:
        r.pop("path")
        r["runtime"] = runtime[r["variant"]]
    w4 = next(r for r in rows if r["spec"] == "quant:w4")
    sparse = [r for r in rows if r["spec"] and "w2" in r["spec"]]
    result = {
        "benchmark": "runtime_latency",
        "task": "Conv-4 ProtoNet body, 28x28, 5-way 1-shot, 75 queries; adapt + classify",
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "cores": os.cpu_count(),
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
            "threads": 1,
        },
        "variants": rows,
        "pytorch_float32": torch_f32,
        "runtime_torch_free": not runtime["_torch_imported"],
        "runtime_max_rss_kib": runtime["_max_rss_kib"],
        "gemm_layer2": runtime["_gemm_layer2"],
        "targets": TARGETS,
        "checks": {
            "4bit_bytes_ok": w4["bytes"] <= TARGETS["4bit_bytes"],
            "2bit_75sparse_bytes_ok": {
                r["variant"]: r["bytes"] <= TARGETS["2bit_75sparse_bytes"] for r in sparse
            },
            "protonet_ms_ok_cpu_time": w4["runtime"]["protonet"]["cpu_ms_median"] <= TARGETS["protonet_ms"],
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{'variant':66s} {'bytes':>7s} {'x f32':>6s} {'agree':>6s} {'proto ms cpu/wall':>18s} "
        f"{'tune5 ms cpu/wall':>18s} {'peak KiB':>8s}"
    )
    def times(t: dict) -> str:
        return f"{t['cpu_ms_median']:8.1f}/{t['wall_ms_median']:<8.1f}"

    for r in rows:
        rt_ = r["runtime"]
        agree = 100 * r["agreement_1000_queries"]
        print(
            f"{r['variant']:66s} {r['bytes']:7d} {r['ratio_to_float32']:6.1f} {agree:5.1f}% "
            f"{times(rt_['protonet'])} {times(rt_['finetune_5_steps'])} "
            f"{rt_['protonet_peak_bytes'] / 1024:8.0f}"
        )
    p = torch_f32
    print(
        f"{'PyTorch float32 (1 thread)':66s} {'':7s} {'':6s} {'':6s} "
        f"{times(p['protonet'])} {times(p['finetune_5_steps'])}"
    )
    print(
        f"runtime imported torch: {runtime['_torch_imported']}; "
        f"load average {load_before} -> {os.getloadavg()}"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
