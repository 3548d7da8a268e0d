"""C runtime benchmark: the exported C library of Conv-4 (4-bit weights, 8-bit activations) and of
the smallest variant against the numpy runtime and PyTorch float32, on one core, in one run.

    nice python benchmarks/c_runtime.py        # writes benchmarks/results/c_runtime.json

For each variant: weight, flash (host `cc -O2` object, and `arm-none-eabi-size` for a Cortex-M4
when the toolchain is installed) and arena bytes; the time to adapt to a 5-way 1-shot task and
classify its 75 queries (ProtoNet), median of `--repeats` runs after warm-up, measured as process
CPU time (the better estimate of an idle core on a shared machine) and wall time:
- C, compiled `-O3 -march=native`, `-O3` (the Makefile's default) and `-O2`, timed inside one process;
- the numpy runtime in its own mode (support and queries as one batch) and in the C code's mode
  (support-set statistics, each query alone), one BLAS thread;
- PyTorch float32 (the uncompressed Conv-4, one thread), the same task.
The C code's operations are counted as its schedule runs them (the support set's layer-by-layer
statistics re-run earlier layers unless their activations fit the cache) and reported as GOP/s,
executed and useful (one forward per image), beside a single-core float32 GEMM peak timed in the
same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runtime_latency import ONE_THREAD, strokes, task  # noqa: E402

from fewbit.deploy.c_export.export import SUPPORT_CACHE_BYTES  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "c_runtime.json"
TARGETS = {"w4a8_weight_bytes": 64 * 1024, "arena_bytes": 256 * 1024, "speedup_vs_numpy": 3.0}
FAST = "-std=c99 -O3 -march=native"
BUILDS = {"O3_native": FAST, "O3": "-std=c99 -O3", "O2": "-std=c99 -O2"}

BENCH_MAIN = r"""
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "fewbit_model.h"

static uint64_t arena[(FEWBIT_ARENA_BYTES + 7) / 8];
static uint8_t support[FEWBIT_MAX_SUPPORT * FEWBIT_INPUT_BYTES], labels[FEWBIT_MAX_SUPPORT];
static uint8_t queries[1000 * FEWBIT_INPUT_BYTES];

static double now(clockid_t clock) {
    struct timespec t;
    clock_gettime(clock, &t);
    return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    fewbit_ctx ctx;
    FILE *f;
    int n = 0, q = 0, r, i, repeats = atoi(argv[3]), checksum = 0;
    float scores[FEWBIT_MAX_WAYS];
    double cpu[200], wall[200];
    f = fopen(argv[1], "rb");
    while (n < FEWBIT_MAX_SUPPORT && fread(&labels[n], 1, 1, f) == 1 &&
           fread(support + n * FEWBIT_INPUT_BYTES, 1, FEWBIT_INPUT_BYTES, f) == FEWBIT_INPUT_BYTES)
        n++;
    fclose(f);
    f = fopen(argv[2], "rb");
    while (q < 1000 && fread(queries + q * FEWBIT_INPUT_BYTES, 1, FEWBIT_INPUT_BYTES, f) == FEWBIT_INPUT_BYTES) q++;
    fclose(f);
    fewbit_init(&ctx, arena, sizeof arena);
    for (r = -3; r < repeats; r++) {
        double c0 = now(CLOCK_PROCESS_CPUTIME_ID), w0 = now(CLOCK_MONOTONIC);
        if (fewbit_adapt_prototypes(&ctx, support, labels, n) != FEWBIT_OK) return 1;
        for (i = 0; i < q; i++) checksum += fewbit_classify(&ctx, queries + i * FEWBIT_INPUT_BYTES, scores);
        if (r >= 0) {
            cpu[r] = now(CLOCK_PROCESS_CPUTIME_ID) - c0;
            wall[r] = now(CLOCK_MONOTONIC) - w0;
        }
    }
    qsort(cpu, repeats, sizeof cpu[0], cmp);
    qsort(wall, repeats, sizeof wall[0], cmp);
    printf("{\"cpu_ms_median\": %.4f, \"cpu_ms_min\": %.4f, \"wall_ms_median\": %.4f, \"wall_ms_min\": %.4f, "
           "\"checksum\": %d}\n", cpu[repeats / 2], cpu[0], wall[repeats / 2], wall[0], checksum);
    return 0;
}
"""

NUMPY_SCRIPT = r"""
import json, sys, time
import numpy as np
import fewbit.runtime as rt
from timing import clock  # benchmarks/ is on PYTHONPATH

paths, task_file, repeats = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])
data = np.load(task_file)

out = {}
for name, path in paths.items():
    model = rt.load(path)
    sx, sy, qx = data["sx"], data["sy"], data["qx"]
    out[name] = {mode: clock(lambda: rt.adapt(model, sx, sy, norm_stats=mode).predict(qx), repeats)
                 for mode in ("batch", "support")}
    out[name]["support_predictions"] = rt.adapt(model, sx, sy, norm_stats="support").predict(qx).tolist()
a = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)
b = np.random.default_rng(1).standard_normal((1024, 1024)).astype(np.float32)
a @ b
times = []
for _ in range(5):
    t = time.process_time()
    a @ b
    times.append(time.process_time() - t)
out["_gemm"] = {"n": 1024, "cpu_s_min": min(times), "gflops": 2 * 1024**3 / min(times) / 1e9}
out["_torch_imported"] = "torch" in sys.modules
print(json.dumps(out))
"""

TORCH_SCRIPT = r"""
import json, sys
import numpy as np
import torch
from fewbit.models import conv4
from fewbit.meta.protonet import prototypes, proto_logits
from timing import clock  # benchmarks/ is on PYTHONPATH

torch.set_num_threads(1)
data = np.load(sys.argv[2])
repeats = int(sys.argv[3])
torch.manual_seed(0)
model = conv4(ways=0).eval()
sx, sy, qx = (torch.from_numpy(data[k]) for k in ("sx", "sy", "qx"))

def protonet():
    with torch.no_grad():
        z = model(torch.cat([sx, qx]), embed=True)
        return proto_logits(z[None, 5:], prototypes(z[None, :5], sy[None], 5))[0].argmax(1)

print(json.dumps({**clock(protonet, repeats), "torch": torch.__version__}))
"""


def build_variants(folder: Path) -> list[dict]:
    """Conv-4 ProtoNet bodies with 8-bit activations, calibrated on strokes, exported to .fewbit and C."""
    import torch

    from fewbit.compress import calibrate, compress_, slim
    from fewbit.deploy import export
    from fewbit.deploy.c_export import export_c
    from fewbit.models import conv4

    torch.set_num_threads(1)
    calib, _ = strokes(10, 4, seed=100)
    variants = [
        ("Conv-4 w4a8", "quant:w4a8", False),
        ("Conv-4 w2a8, 75% unstructured sparse (Rice masks)", "prune:0.75,quant:w2a8", False),
        ("Conv-4 w2a8, 75% of conv weights removed (channel prune 50% + slim): the smallest", "quant:w2a8", True),
    ]
    rows = []
    for i, (label, spec, channel_slim) in enumerate(variants):
        torch.manual_seed(0)
        model = conv4(ways=0)
        if channel_slim:
            compress_(model, "prune:channel:0.5@features.*")
            model = slim(model)
        compress_(model, spec)
        calibrate(model, [torch.from_numpy(calib)])
        path = folder / f"v{i}.fewbit"
        info = export(model.eval(), path, algorithm="protonet")
        report = export_c(path, folder / f"v{i}_c")
        rows.append(
            {
                "variant": label,
                "spec": spec,
                "slimmed": channel_slim,
                "artifact_bytes": info["bytes"],
                "float32_bytes": info["float32_bytes"],
                "path": str(path),
                "c": report,
            }
        )
    return rows


def stage_costs(model_path: str) -> tuple[list[int], list[int], list[bool]]:
    """Per body stage of one image: multiply-accumulates, output bytes, and whether freezing it
    takes a pass over the support set (BatchNorm, or a next layer with a per-batch range)."""
    import fewbit.runtime as rt
    from fewbit.deploy.c_export import stage_geometry
    from fewbit.runtime.support_stats import body_stages

    model = rt.load(model_path)
    stages = body_stages(model)
    geo = stage_geometry(model, stages)
    macs = [g["cout"] * g["fan"] * g["hout"] * g["wout"] for g in geo]
    out_bytes = [g["cout"] * g["hp"] * g["wp"] for g in geo]
    passes = [
        st.bn is not None or (i + 1 < len(stages) and bool(getattr(stages[i + 1].linop.input_quant, "dynamic", False)))
        for i, st in enumerate(stages)
    ]
    return macs, out_bytes, passes


def executed_macs(
    macs: list[int], out_bytes: list[int], passes: list[bool], shots: int, queries: int, cache_bytes: int
) -> int:
    """What the C code multiplies for one task, following its schedule (kernels.c, fb_freeze): each
    statistics pass runs the support set through the stages before (from the deepest cached stage
    when the support activations fit the cache), then the support embeddings, then the queries."""
    level, total = -1, 0

    def prefix(upto: int) -> int:
        return sum(macs[level + 1 : upto]) if 0 <= level < upto else sum(macs[:upto])

    for s in range(len(macs)):
        if passes[s]:
            total += shots * (prefix(s) + macs[s])
        fits = s + 1 < len(macs) and shots * out_bytes[s] <= cache_bytes
        if fits and (level < 0 or out_bytes[s] <= out_bytes[level]):
            total += shots * (prefix(s) + macs[s])
            level = s
    return total + shots * prefix(len(macs)) + queries * sum(macs)


def compile_bench(folder: Path, flags: str, name: str) -> Path:
    (folder / "bench_main.c").write_text(BENCH_MAIN)
    exe = folder / f"bench_{name}"
    subprocess.run(
        [
            "cc",
            *flags.split(),
            "-ffp-contract=off",
            "-o",
            str(exe),
            str(folder / "bench_main.c"),
            str(folder / "fewbit_model.c"),
            "-lm",
        ],
        check=True,
    )
    return exe


def arm_size(folder: Path) -> dict | None:
    arm = shutil.which("arm-none-eabi-gcc")
    if arm is None:
        return None
    obj = folder / "cortex_m4.o"
    flags = ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"]
    flags += ["-std=c99", "-O2", "-ffp-contract=off"]
    subprocess.run([arm, *flags, "-c", "-o", str(obj), str(folder / "fewbit_model.c")], check=True)
    out = subprocess.run(["arm-none-eabi-size", str(obj)], capture_output=True, text=True, check=True).stdout
    text, data, bss = (int(v) for v in out.splitlines()[1].split()[:3])
    return {"flags": " ".join(flags), "text": text, "data_plus_bss": data + bss}


def run(argv: list[str], env: dict | None = None) -> dict:
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(done.stderr or done.stdout)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    from fewbit.deploy.c_export import pixels_to_input, write_task_files

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    load_before = os.getloadavg()
    env = dict(os.environ, **ONE_THREAD)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent), env.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows = build_variants(folder)
        sx, sy, qx, qy = task(0)  # 5-way 1-shot, 75 queries, float32 in [0, 1]: exact 8-bit pixels
        pre = {"mean": 0.0, "std": 1.0}
        support_px = np.rint(sx * 255).astype(np.uint8)
        query_px = np.rint(qx * 255).astype(np.uint8)
        sx, qx = pixels_to_input(support_px, pre), pixels_to_input(query_px, pre)
        np.savez(folder / "task.npz", sx=sx, sy=sy, qx=qx)
        write_task_files(folder / "task", support_px, sy, query_px)
        files = [str(folder / "task" / "support.bin"), str(folder / "task" / "query.bin")]
        numpy_side = run(
            [
                sys.executable,
                "-c",
                NUMPY_SCRIPT,
                json.dumps({r["variant"]: r["path"] for r in rows}),
                str(folder / "task.npz"),
                str(args.repeats),
            ],
            env,
        )
        torch_side = run([sys.executable, "-c", TORCH_SCRIPT, "", str(folder / "task.npz"), str(args.repeats)], env)
        gemm = numpy_side["_gemm"]
        for r in rows:
            c_dir = Path(r["c"]["out"])
            per_stage, out_bytes, passes = stage_costs(r["path"])
            macs = executed_macs(per_stage, out_bytes, passes, len(sy), len(qy), SUPPORT_CACHE_BYTES)
            useful = (len(sy) + len(qy)) * sum(per_stage)  # one forward per image, as a batch runtime does
            r["macs_per_image"] = sum(per_stage)
            r["c_macs_per_task"] = macs
            timings = {}
            for name, flags in BUILDS.items():
                exe = compile_bench(c_dir, flags, name)
                t = run([str(exe), *files, str(args.repeats)])
                t["flags"] = flags
                t["gops_executed"] = 2 * macs / (t["cpu_ms_median"] * 1e6)
                t["gops_useful"] = 2 * useful / (t["cpu_ms_median"] * 1e6)
                timings[name] = t
            subprocess.run(["make", "-s", "-C", str(c_dir)], check=True, capture_output=True)
            pred_c = subprocess.run([str(c_dir / "example"), *files], capture_output=True, text=True, check=True)
            c_pred = [int(v) for v in pred_c.stdout.split()]
            npy = numpy_side[r["variant"]]
            r["c_time"] = timings
            r["numpy_time"] = {m: npy[m] for m in ("batch", "support")}
            r["c_vs_numpy_support_predictions_agree"] = float(np.mean(np.asarray(c_pred) == npy["support_predictions"]))
            r["accuracy_c"] = float(np.mean(np.asarray(c_pred) == qy))
            r["speedup_vs_numpy_batch"] = npy["batch"]["cpu_ms_median"] / timings["O3_native"]["cpu_ms_median"]
            r["speedup_vs_numpy_support"] = npy["support"]["cpu_ms_median"] / timings["O3_native"]["cpu_ms_median"]
            r["speedup_vs_torch_float32"] = torch_side["cpu_ms_median"] / timings["O3_native"]["cpu_ms_median"]
            r["cortex_m4"] = arm_size(c_dir)
            r.pop("path")
    w4 = rows[0]
    result = {
        "benchmark": "c_runtime",
        "task": "5-way 1-shot, 75 queries, 28x28 strokes; ProtoNet adapt + classify; one core",
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cc": subprocess.run(["cc", "--version"], capture_output=True, text=True).stdout.splitlines()[0],
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
        },
        "gemm_float32_single_core": gemm,
        "pytorch_float32": torch_side,
        "numpy_runtime_torch_free": not numpy_side["_torch_imported"],
        "variants": rows,
        "targets": TARGETS,
        "checks": {
            "w4a8_weights_fit_64kb": w4["c"]["weight_bytes"] <= TARGETS["w4a8_weight_bytes"],
            "arena_fits_256kb": all(r["c"]["arena_bytes"] <= TARGETS["arena_bytes"] for r in rows),
            "w4a8_3x_faster_than_numpy": w4["speedup_vs_numpy_batch"] >= TARGETS["speedup_vs_numpy"],
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"single-core float32 GEMM peak: {gemm['gflops']:.1f} GFLOP/s (numpy, 1024^3)")
    print(f"PyTorch float32 Conv-4: {torch_side['cpu_ms_median']:.1f} ms (cpu, median)")
    for r in rows:
        c, f = r["c"], r["c_time"]["O3_native"]
        other = ", ".join(f"{r['c_time'][k]['cpu_ms_median']:.1f} ms ({BUILDS[k]})" for k in ("O3", "O2"))
        arm = r["cortex_m4"]
        print(f"\n{r['variant']}")
        print(
            f"  weights {c['weight_bytes']:,} B, flash {c['flash_bytes']:,} B (host -O2), arena {c['arena_bytes']:,} B"
            + (f", Cortex-M4 text {arm['text']:,} B, data+bss {arm['data_plus_bss']} B" if arm else "")
        )
        print(
            f"  C {f['cpu_ms_median']:.1f} ms ({FAST}), {other}; "
            f"numpy {r['numpy_time']['batch']['cpu_ms_median']:.1f} ms (batch), "
            f"{r['numpy_time']['support']['cpu_ms_median']:.1f} ms (support statistics)"
        )
        print(
            f"  C is {r['speedup_vs_numpy_batch']:.2f}x numpy (batch), {r['speedup_vs_numpy_support']:.2f}x numpy "
            f"(support), {r['speedup_vs_torch_float32']:.2f}x PyTorch float32; "
            f"{f['gops_executed']:.1f} GOP/s executed ({f['gops_useful']:.1f} useful); "
            f"predictions equal numpy's: {100 * r['c_vs_numpy_support_predictions_agree']:.1f}%"
        )
    print(f"\nchecks: {result['checks']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
