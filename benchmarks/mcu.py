"""MCU benchmark: the C export run on an emulated Cortex-M4F (QEMU mps2-an386, `make qemu`) for Conv-4
w4a8, Conv-4 w2a8 with 75% unstructured sparsity, the channel-pruned slimmed w2a8 Conv-4, and Conv-4
w4a8 adapting by head fine-tuning; beside it, the same C on this host against the numpy runtime,
one core, in one run. Then the series models: the shipped signals-conv1d-w4 (1 x 128) and a 1-D Conv-4
w4a8 over 3-channel series of 512 steps, on 5-way 1-shot series tasks (exported for 5 ways).

    nice python benchmarks/mcu.py                   # writes benchmarks/results/mcu.json
    nice python benchmarks/mcu.py --only series     # the series rows again, the image rows kept

Per variant, measured on the linked image and the emulated run (fewbit.deploy.c_export.mcu): flash
(text + rodata + the data's load image), static RAM (data + bss, MPU guards, the fault handlers'
stack), the arena (default limits: 20 ways, 100 support images), the peak stack (painted, read after
adapt + classify), total SRAM = static + arena + peak stack; the instructions to initialise (sparse
layers decode their schedules there, once), to adapt to a 5-way 1-shot task and to classify one
query (mean of 75), counted with QEMU's -icount through the board timer (exact to 40), and the
milliseconds they take at 168 MHz and 1.25 cycles per instruction (an assumption: a Cortex-M4 runs
Thumb-2 at about 1 to 1.5). The emulated predictions are compared with the numpy runtime's on all
75 queries. On the host: adapt + 75 queries in C (`-O3 -march=native`, process CPU time, median of
`--repeats`) and in the numpy runtime (one BLAS thread, batch and support-statistics modes).
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from c_runtime import FAST, NUMPY_SCRIPT, compile_bench, run  # noqa: E402
from runtime_latency import ONE_THREAD, strokes, task  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "mcu.json"
PART_RAM, PART_FLASH = 256 * 1024, 1024 * 1024

VARIANTS = [  # (label, compression, channel prune + slim, algorithm)
    ("Conv-4 w4a8", "quant:w4a8", False, "protonet"),
    ("Conv-4 w2a8, 75% unstructured sparse (Rice masks)", "prune:0.75,quant:w2a8", False, "protonet"),
    ("Conv-4 w2a8, channel prune 50% + slim", "quant:w2a8", True, "protonet"),
    ("Conv-4 w4a8, head fine-tuning (5 SGD steps)", "quant:w4a8", False, "anil"),
]


def build(folder: Path, i: int, spec: str, channel_slim: bool, algorithm: str) -> Path:
    """A Conv-4 body compressed with `spec`, calibrated on strokes, exported to `.fewbit`."""
    import torch

    from fewbit.compress import calibrate, compress_, slim
    from fewbit.deploy import export
    from fewbit.meta import MetaConfig
    from fewbit.models import conv4

    torch.set_num_threads(1)
    calib, _ = strokes(10, 4, seed=100)
    torch.manual_seed(0)
    model = conv4(ways=0 if algorithm == "protonet" else 5)
    if channel_slim:
        compress_(model, "prune:channel:0.5@features.*")
        model = slim(model)
    compress_(model, spec)
    calibrate(model, [torch.from_numpy(calib)])
    path = folder / f"v{i}.fewbit"
    if algorithm == "protonet":
        export(model.eval(), path, algorithm="protonet")
    else:
        export(model.eval(), path, meta=MetaConfig(algorithm=algorithm, scope="head", inner_steps=5, inner_lr=0.4))
    return path


def series_rows(folder: Path) -> list[dict]:
    """The series models on the emulated part: the shipped signals model, and a 3 x 512 1-D Conv-4
    w4a8 (random weights, activations calibrated on series; the figures depend on shapes, not values)."""
    import torch

    import fewbit.runtime as rt
    from fewbit.compress import calibrate, compress_
    from fewbit.deploy import export
    from fewbit.deploy.c_export import export_c, mcu
    from fewbit.models import build_backbone
    from fewbit.pretrained import model_names, model_path
    from fewbit.runtime.series import SeriesPreprocessing

    torch.set_num_threads(1)
    models = []
    if "signals-conv1d-w4" in model_names():
        models.append(("signals-conv1d-w4 (shipped; 1 x 128)", model_path("signals-conv1d-w4")))
    pre = SeriesPreprocessing(channels=3, length=512)
    torch.manual_seed(0)
    net = build_backbone("conv1d", ways=0, input_shape=(3, 1, 512))
    compress_(net, "quant:w4a8:lsq")
    calib, _, _ = mcu.series_task(pre, ways=10, shots=4, queries=1, seed=100)
    calibrate(net, [torch.from_numpy(calib)])
    export(net.eval(), folder / "s512.fewbit", algorithm="protonet", preprocessing=pre.to_dict())
    models.append(("1-D Conv-4 w4a8, 3 x 512", folder / "s512.fewbit"))
    rows = []
    for i, (label, path) in enumerate(models):
        report = export_c(path, folder / f"s{i}_c", max_ways=5, max_support=5, mcu=True)
        report.pop("out")
        rows.append({"variant": label, "bytes": Path(path).stat().st_size,
                     "input_shape": list(rt.load(path).input_shape), "c": report})
        print(f"{label}: {mcu.figures_text(report)}", flush=True)
    return rows


def main() -> None:
    from fewbit.deploy.c_export import CTarget, export_c, mcu, pixels_to_input, write_task_files

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--only", choices=("series",), help="measure the series rows only; keep --out's others")
    args = parser.parse_args()
    mcu.require_tools()
    if args.only:
        result = json.loads(args.out.read_text())
        with tempfile.TemporaryDirectory() as tmp:
            result["series"] = series_rows(Path(tmp))
        result["checks"]["series_3x512_total_sram_within_256kb"] = \
            result["series"][-1]["c"]["mcu_total_ram_bytes"] <= PART_RAM
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
        return
    load_before = os.getloadavg()
    env = dict(os.environ, **ONE_THREAD)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent), env.get("PYTHONPATH")]))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sx, sy, qx, qy = task(0)  # 5-way 1-shot, 75 queries, strokes in [0, 1]: exact 8-bit pixels
        support_px, query_px = np.rint(sx * 255).astype(np.uint8), np.rint(qx * 255).astype(np.uint8)
        pre = {"mean": 0.0, "std": 1.0}
        np.savez(folder / "task.npz", sx=pixels_to_input(support_px, pre), sy=sy, qx=pixels_to_input(query_px, pre))
        write_task_files(folder / "task", support_px, sy, query_px)
        files = [str(folder / "task" / "support.bin"), str(folder / "task" / "query.bin")]
        paths = {}
        for i, (label, spec, channel_slim, algorithm) in enumerate(VARIANTS):
            path = build(folder, i, spec, channel_slim, algorithm)
            report = export_c(path, folder / f"v{i}_c", task=(support_px, sy, query_px), mcu=True)
            report.pop("out")
            row = {"variant": label, "spec": spec, "slimmed": channel_slim, "algorithm": algorithm, "c": report}
            row["accuracy_mcu"] = float(np.mean(np.asarray(report["mcu_predictions"]) == qy))
            rows.append(row)
            paths[label] = str(path)
            print(f"{label}: {mcu.figures_text(report)}", flush=True)
        series = series_rows(folder)
        timed = {r["variant"]: paths[r["variant"]] for r in rows if r["algorithm"] == "protonet"}
        numpy_side = run(
            [sys.executable, "-c", NUMPY_SCRIPT, json.dumps(timed), str(folder / "task.npz"), str(args.repeats)], env
        )
        for i, r in enumerate(rows):
            if r["variant"] not in timed:
                continue
            exe = compile_bench(folder / f"v{i}_c", FAST, "fast")
            c_time = run([str(exe), *files, str(args.repeats)])
            npy = numpy_side[r["variant"]]
            r["host"] = {
                "c_flags": FAST,
                "c": c_time,
                "numpy": {m: npy[m] for m in ("batch", "support")},
                "c_vs_numpy_batch": npy["batch"]["cpu_ms_median"] / c_time["cpu_ms_median"],
                "c_vs_numpy_support": npy["support"]["cpu_ms_median"] / c_time["cpu_ms_median"],
            }
    dense, sparse = rows[0], rows[1]
    result = {
        "benchmark": "mcu",
        "task": "5-way 1-shot, 75 queries, 28x28 strokes; one adaptation, then each query classified alone",
        "part": {
            "model": mcu.part_name(CTarget()),
            "flash": "1 MB at 0x00000000",
            "sram": "256 KB at 0x20000000",
            "board": mcu.BOARD,
            "instructions": "QEMU -icount shift=0 (1 ns per instruction) read through the board's 25 MHz timer",
            "clock_hz": mcu.CLOCK_HZ,
            "cycles_per_instruction": mcu.CPI,
        },
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cc": subprocess.run(["cc", "--version"], capture_output=True, text=True).stdout.splitlines()[0],
            "arm_cc": subprocess.run(["arm-none-eabi-gcc", "--version"], capture_output=True, text=True)
            .stdout.splitlines()[0],
            "qemu": subprocess.run(["qemu-system-arm", "--version"], capture_output=True, text=True)
            .stdout.splitlines()[0],
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
        },
        "variants": rows,
        "series": series,
        "head_extra_arena_bytes": rows[3]["c"]["mcu_arena_bytes"] - rows[0]["c"]["mcu_arena_bytes"],
        "checks": {
            "w4a8_total_sram_within_256kb": dense["c"]["mcu_total_ram_bytes"] <= PART_RAM,
            "w4a8_flash_within_1mb": dense["c"]["mcu_flash_bytes"] <= PART_FLASH,
            "all_predictions_match_numpy": all(r["c"]["mcu_predictions_match"] for r in rows),
            "sparse_no_more_instructions_than_w4a8": (
                sparse["c"]["mcu_instructions_adapt"] + sparse["c"]["mcu_instructions_classify"]
                <= dense["c"]["mcu_instructions_adapt"] + dense["c"]["mcu_instructions_classify"]
            ),
            "sparse_at_least_as_fast_as_w4a8_on_host": (
                sparse["host"]["c"]["cpu_ms_median"] <= dense["host"]["c"]["cpu_ms_median"]
            ),
            "sparse_2x_numpy_on_host": sparse["host"]["c_vs_numpy_batch"] >= 2.0,
            "series_3x512_total_sram_within_256kb": series[-1]["c"]["mcu_total_ram_bytes"] <= PART_RAM,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print()
    for r in rows:
        c = r["c"]
        host = r.get("host")
        line = (
            f"{r['variant']}: flash {c['mcu_flash_bytes']:,} B, SRAM {c['mcu_total_ram_bytes']:,} B "
            f"(static {c['mcu_static_ram_bytes']:,} + arena {c['mcu_arena_bytes']:,} "
            f"+ stack {c['mcu_stack_bytes']:,}), "
            f"adapt {c['mcu_instructions_adapt']:,} instr ({c['mcu_ms_adapt']:.0f} ms), "
            f"classify {c['mcu_instructions_classify']:,} ({c['mcu_ms_classify']:.1f} ms)"
        )
        if host:
            line += (
                f"; host C {host['c']['cpu_ms_median']:.1f} ms vs numpy "
                f"{host['numpy']['batch']['cpu_ms_median']:.1f} ms"
                f" ({host['c_vs_numpy_batch']:.2f}x)"
            )
        print(line)
    print(f"\nchecks: {result['checks']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
