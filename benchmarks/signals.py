"""Signals: fewbit's recipe on real series it never trained on, side by side with what a
practitioner would use instead, on the same seeded tasks.

fewbit meta-trains the 1-D Conv-4 on the embedded, generated `signals` family only
(configs/signals.yaml, one run per channel count the held-out sets need; w4a8 and float32), ships
it with cosine prototypes, and is scored in the numpy runtime. The held-out sets are the UCR/UEA
classification sets aeon's wheel bundles (read with fewbit's own `series:` readers from aeon's
files; never trained on): ACSF1 (power), ArrowHead and OSULeaf (outlines), BasicMotions (IMU, 6
channels), GunPoint (motion), ItalyPowerDemand (load), JapaneseVowels (12 channels, unequal
lengths), PickupGestureWiimoteZ (accelerometer, unequal lengths). Each set's TRAIN and TEST files
are one pool of classes; tasks are N-way (N = min(5, its classes)) K-shot, K in {1, 5}.

The peers are fitted on each task's support set only, on the series at their own length
(z-normalised per series; unequal lengths resampled to the set's longest): 1-NN Euclidean, 1-NN
DTW (Sakoe-Chiba band of 10% of the length; skipped where a task would take more than 1e8 cells:
ACSF1) and MiniRocket + ridge (aeon). Needs the benchmark extra:

    pip install 'fewbit[signals-bench]'        # aeon: its data files and the DTW / MiniRocket peers
    nice python benchmarks/signals.py           # -> benchmarks/results/signals.json
    nice python benchmarks/signals.py --sets GunPoint,ArrowHead --tasks 100 --steps 300   # shorter
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fewbit._io import atomic_write_json
from fewbit.data.series import SeriesDataset
from fewbit.data.series_files import SeriesCollection, read_collection_file
from fewbit.deploy import export
from fewbit.deploy.c_export import export_c
from fewbit.deploy.c_export.inputs import c_input, write_task_files
from fewbit.evaluation import DEFAULT_EVAL_SEED, eval_tasks, evaluate_artifact
from fewbit.report.metrics import mean_ci
from fewbit.runtime import adapt
from fewbit.runtime import load as load_artifact
from fewbit.runtime.series import SeriesPreprocessing
from fewbit.train import load_config, load_run, meta_train
from fewbit.train.run import read_run_config, train_times

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "configs" / "signals.yaml"
SETS = ("ACSF1", "ArrowHead", "BasicMotions", "GunPoint", "ItalyPowerDemand", "JapaneseVowels", "OSULeaf",
        "PickupGestureWiimoteZ")
TEST_RULE = "metabaseline"  # cosine prototypes, as the shipped model adapts
DTW_WINDOW = 0.1  # Sakoe-Chiba band, a fraction of the length: the UCR archive's constrained DTW
DTW_MAX_CELLS = 1e8  # DTW cells a task may take (queries x support x length x band); beyond it DTW is skipped
sys.path.insert(0, str(Path(__file__).resolve().parent))
from series_peers import PEERS, missing  # noqa: E402
from timing import clock  # noqa: E402


def aeon_data() -> Path:
    """The folder of data sets inside the installed aeon wheel (SystemExit naming the extra without it)."""
    spec = importlib.util.find_spec("aeon")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the signals benchmark reads the UCR/UEA sets aeon ships: pip install 'fewbit[signals-bench]'")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


def held_out(name: str, root: Path) -> SeriesCollection:
    """A set's TRAIN and TEST files as one pool of labelled series (few-shot splits are by class)."""
    parts = [read_collection_file(root / name / f"{name}_{part}.ts") for part in ("TRAIN", "TEST")]
    return SeriesCollection([s for p in parts for s in p.series], [v for p in parts for v in p.labels])


def prepared(data: SeriesCollection, pre: SeriesPreprocessing, name: str) -> SeriesDataset:
    """All of `data` as one dataset, prepared by `pre` (class order: sorted labels)."""
    names = sorted(set(data.labels))
    index = {n: i for i, n in enumerate(names)}
    labels = np.array([index[v] for v in data.labels], np.int64)
    return SeriesDataset(name, data.series, pre.prepare(data.series), labels, tuple(names), ("",) * len(names), pre)


def trained(channels: int, compress: bool, workdir: Path, steps: int | None) -> tuple[Path, float]:
    """The recipe's run for `channels` (w4a8 or float32), trained unless `workdir` holds it finished;
    (its folder, its training wall seconds)."""
    overrides: dict[str, Any] = {"channels": channels, "device": "cpu"}
    if not compress:
        overrides["compress"] = None
    if steps:
        overrides["steps"] = steps
    config = load_config(RECIPE, **{k: v for k, v in overrides.items() if v is not None})
    if not compress:
        config = config.replace(compress=None)
    run_dir = workdir / f"signals-c{channels}-{'w4a8' if compress else 'float32'}"
    same = (run_dir / "config.yaml").is_file() and read_run_config(run_dir) == config
    step = load_run(run_dir, checkpoint="last").step if same and (run_dir / "checkpoints").is_dir() else 0
    if step != config.steps:
        if not step:
            shutil.rmtree(run_dir, ignore_errors=True)
        print(f"training {run_dir.name}: {config.steps} steps" + (f", resumed at step {step}" if step else ""),
              flush=True)
        meta_train(config, run_dir, progress=False, resume=bool(step))
    return run_dir, train_times(run_dir)[config.steps]


def exported(run_dir: Path) -> Path:
    """The run as the artifact that ships: cosine prototypes."""
    run = load_run(run_dir, checkpoint="last")
    run.test_time(algorithm=TEST_RULE)
    path = run_dir / "model.fewbit"
    export(run.model, path, algorithm=run.algorithm, extras=run.extras, preprocessing=run.preprocessing.to_dict())
    return path


def score_peers(dataset: SeriesDataset, ways: int, shots: int, queries: int, tasks: int) -> dict[str, Any]:
    """Each peer on the seeded tasks (the same as fewbit's: same class and series layout, same seed)."""
    out: dict[str, Any] = {}
    drawn = [t for batch in eval_tasks(dataset, ways=ways, shots=shots, queries=queries, tasks=tasks,
                                       seed=DEFAULT_EVAL_SEED, batch=25) for t in _split(batch)]
    length = dataset.length
    for name, fit_predict in PEERS.items():
        if name == "1nn-dtw":
            cells = ways * shots * len(drawn[0].query_y[0]) * length * min(length, 2 * int(DTW_WINDOW * length) + 1)
            if cells > DTW_MAX_CELLS:
                out[name] = {"skipped": f"{cells:.2g} DTW cells a task, over the benchmark's bound of "
                                        f"{DTW_MAX_CELLS:.0e} ({tasks} tasks would take hours on 2 cores)"}
                continue
            fit_predict = functools.partial(fit_predict, window=DTW_WINDOW)
        accs, start = [], time.perf_counter()
        for t in drawn:
            sx, qx = t.support_x[0, :, :, 0].numpy(), t.query_x[0, :, :, 0].numpy()  # [n, C, L]
            pred = np.asarray(fit_predict(sx, t.support_y[0].numpy(), qx))
            accs.append(float((pred == t.query_y[0].numpy()).mean()))
        result = mean_ci(accs)
        out[name] = {"accuracy": round(result.mean, 5), "ci95": round(result.ci95, 5),
                     "seconds_per_task": round((time.perf_counter() - start) / len(drawn), 4)}
    return out


def _split(batch: Any) -> list[Any]:
    return [batch[i : i + 1] for i in range(batch.num_tasks)]


BENCH_MAIN = r"""
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "fewbit_model.h"

static uint64_t arena[(FEWBIT_ARENA_BYTES + 7) / 8];
static fewbit_input_t support[FEWBIT_MAX_SUPPORT * FEWBIT_INPUT_VALUES], queries[100 * FEWBIT_INPUT_VALUES];
static uint8_t labels[FEWBIT_MAX_SUPPORT];

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    fewbit_ctx ctx;
    FILE *f;
    int n = 0, q = 0, r, i, repeats = argc > 3 ? atoi(argv[3]) : 20, predicted[100];
    float scores[FEWBIT_MAX_WAYS];
    double wall[200];
    f = fopen(argv[1], "rb");
    while (n < FEWBIT_MAX_SUPPORT && fread(&labels[n], 1, 1, f) == 1 &&
           fread(support + (size_t)n * FEWBIT_INPUT_VALUES, 1, FEWBIT_INPUT_BYTES, f) == FEWBIT_INPUT_BYTES)
        n++;
    fclose(f);
    f = fopen(argv[2], "rb");
    while (q < 100 && fread(queries + (size_t)q * FEWBIT_INPUT_VALUES, 1, FEWBIT_INPUT_BYTES, f) == FEWBIT_INPUT_BYTES)
        q++;
    fclose(f);
    if (repeats < 1 || repeats > 200 || fewbit_init(&ctx, arena, sizeof arena) != FEWBIT_OK) return 1;
    for (r = -2; r < repeats; r++) {
        double w0 = now();
        if (fewbit_adapt_prototypes(&ctx, support, labels, n) != FEWBIT_OK) return 1;
        for (i = 0; i < q; i++) predicted[i] = fewbit_classify(&ctx, queries + (size_t)i * FEWBIT_INPUT_VALUES, scores);
        if (r >= 0) wall[r] = now() - w0;
    }
    qsort(wall, repeats, sizeof wall[0], cmp);
    printf("{\"wall_ms_median\": %.4f, \"wall_ms_min\": %.4f, \"predictions\": [", wall[repeats / 2], wall[0]);
    for (i = 0; i < q; i++) printf("%s%d", i ? ", " : "", predicted[i]);
    printf("]}\n");
    return 0;
}
"""


def latency(artifact: Path, dataset: SeriesDataset, ways: int, workdir: Path, repeats: int = 20) -> dict[str, Any]:
    """Adapting to one `ways`-way 1-shot task and classifying its 15 queries a class, side by side
    in one run: the numpy runtime (its default mode, and support-set statistics as the C code runs)
    and the exported C (`cc -O3`, one process), median wall ms; whether C's predictions equal numpy's."""
    model = load_artifact(artifact)
    queries = min(15, dataset.smallest_class()[1] - 1)
    task = next(iter(eval_tasks(dataset, ways=ways, shots=1, queries=queries, tasks=1, seed=DEFAULT_EVAL_SEED)))
    sx, sy, qx = task.support_x[0].numpy(), task.support_y[0].numpy(), task.query_x[0].numpy()
    out: dict[str, Any] = {"ways": ways, "shots": 1, "queries": int(qx.shape[0])}
    out["numpy_ms"] = clock(lambda: adapt(model, sx, sy).predict(qx), repeats=repeats)["wall_ms_median"]
    support_mode = adapt(model, sx, sy, norm_stats="support")
    out["numpy_support_stats_ms"] = clock(lambda: adapt(model, sx, sy, norm_stats="support").predict(qx),
                                          repeats=repeats)["wall_ms_median"]
    folder = workdir / f"c-{artifact.parent.name}"
    shutil.rmtree(folder, ignore_errors=True)
    report = export_c(artifact, folder, max_ways=ways, max_support=ways)
    support_file, query_file = write_task_files(folder / "task", sx, sy, qx, c_input(model.preprocessing))
    (folder / "bench_main.c").write_text(BENCH_MAIN)
    exe = folder / "bench"
    subprocess.run(["cc", "-std=c99", "-O3", "-ffp-contract=off", "-o", str(exe), str(folder / "bench_main.c"),
                    str(folder / "fewbit_model.c"), "-lm"], check=True)
    done = subprocess.run([str(exe), str(support_file), str(query_file), str(repeats)], capture_output=True,
                          text=True, check=True)
    c = json.loads(done.stdout)
    out.update(c_ms=round(c["wall_ms_median"], 3), c_arena_bytes=report["arena_bytes"],
               c_flash_bytes=report.get("flash_bytes"),
               c_equals_numpy=c["predictions"] == support_mode.predict(qx).tolist())
    out["numpy_ms"], out["numpy_support_stats_ms"] = round(out["numpy_ms"], 3), round(out["numpy_support_stats_ms"], 3)
    out["numpy_over_c"] = round(out["numpy_ms"] / out["c_ms"], 2)  # C runs as numpy's support mode does
    out["numpy_support_stats_over_c"] = round(out["numpy_support_stats_ms"] / out["c_ms"], 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--steps", type=int, help="training steps (default: the recipe's)")
    parser.add_argument("--workdir", default="/tmp/fewbit-bench/signals")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "signals.json"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if missing():
        raise SystemExit(f"the peers need {', '.join(missing())}: pip install 'fewbit[signals-bench]'")
    torch.set_num_threads(args.threads)
    root = aeon_data()
    sets = {name: held_out(name, root) for name in args.sets.split(",")}
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    models: dict[tuple[int, str], dict[str, Any]] = {}
    for channels in sorted({d.channels for d in sets.values()}):
        for variant in ("w4a8", "float32"):
            run_dir, seconds = trained(channels, variant == "w4a8", workdir, args.steps)
            path = exported(run_dir)
            models[channels, variant] = {"artifact": path, "bytes": path.stat().st_size,
                                         "train_seconds": round(seconds, 1)}
    report: dict[str, Any] = {"benchmark": "signals", "recipe": str(RECIPE.relative_to(ROOT)), "tasks": args.tasks,
                              "test_rule": TEST_RULE, "torch": torch.__version__, "threads": args.threads,
                              "machine": platform.processor() or platform.machine(),
                              "models": {f"c{c}-{v}": {k: w for k, w in m.items() if k != "artifact"}
                                         for (c, v), m in models.items()},
                              "sets": {}}
    for name, data in sets.items():
        started = time.perf_counter()
        classes = sorted(set(data.labels))
        smallest = min(data.labels.count(c) for c in classes)
        entry: dict[str, Any] = {"classes": len(classes), "series": len(data), "channels": data.channels,
                                 "length_min": min(s.shape[1] for s in data.series),
                                 "length_max": max(s.shape[1] for s in data.series)}
        native = prepared(data, SeriesPreprocessing(channels=data.channels, length=entry["length_max"]), name)
        for shots in (1, 5):
            queries = min(15, smallest - shots)
            if queries < 1:
                continue
            ways = min(5, len(classes))
            row: dict[str, Any] = {"ways": ways, "shots": shots, "queries": queries}
            for variant in ("w4a8", "float32"):
                model = load_artifact(models[data.channels, variant]["artifact"])
                ds = prepared(data, model.prep, name)
                r = evaluate_artifact(model, ds, ways=ways, shots=shots, queries=queries, tasks=args.tasks)
                row[f"fewbit_{variant}"] = {"accuracy": round(r.value, 5), "ci95": round(r.ci95, 5)}
            row.update(score_peers(native, ways, shots, queries, args.tasks))
            entry[f"{ways}way_{shots}shot"] = row
            ran = [p for p in PEERS if "accuracy" in row[p]]
            row["best_peer"] = max(ran, key=lambda p: row[p]["accuracy"])
            best = row[row["best_peer"]]["accuracy"]
            print(f"{name} {ways}-way {shots}-shot: fewbit w4a8 {100 * row['fewbit_w4a8']['accuracy']:.2f}% "
                  f"(float32 {100 * row['fewbit_float32']['accuracy']:.2f}%), best peer {100 * best:.2f}% "
                  + ", ".join(f"{p} {100 * row[p]['accuracy']:.2f}" if p in ran else f"{p} skipped" for p in PEERS)
                  + f" [{time.perf_counter() - started:.0f} s]", flush=True)
        variant_models = {v: models[data.channels, v]["artifact"] for v in ("w4a8", "float32")}
        entry["latency"] = {v: latency(path, prepared(data, load_artifact(path).prep, name), min(5, len(classes)),
                                       workdir) for v, path in variant_models.items()}
        print(f"{name} latency ({min(5, len(classes))}-way 1-shot task): " + ", ".join(
            f"{v} numpy {r['numpy_ms']:.2f} ms, C {r['c_ms']:.2f} ms (C = numpy: {r['c_equals_numpy']})"
            for v, r in entry["latency"].items()), flush=True)
        report["sets"][name] = entry
        atomic_write_json(args.out, report)
    for shots in (1, 5):
        rows = [e[k] for e in report["sets"].values() for k in e if k.endswith(f"way_{shots}shot")]
        if rows:
            mean: dict[str, Any] = {"sets": len(rows)}
            for k in ("fewbit_w4a8", "fewbit_float32", *PEERS):
                got = [r[k]["accuracy"] for r in rows if "accuracy" in r[k]]
                mean[k] = round(float(np.mean(got)), 5)
                if len(got) < len(rows):
                    mean[f"{k}_sets"] = len(got)  # a peer skipped on some sets: its mean is over the others
            # the best peer of each set (among those that ran there), averaged over the sets
            mean["best_peer_per_set"] = round(float(np.mean([r[r["best_peer"]]["accuracy"] for r in rows])), 5)
            mean["fewbit_w4a8_minus_best_peer"] = round(mean["fewbit_w4a8"] - mean["best_peer_per_set"], 5)
            report[f"mean_{shots}shot"] = mean
            print(f"mean {shots}-shot over {len(rows)} sets: " + json.dumps(mean), flush=True)
    atomic_write_json(args.out, report)


if __name__ == "__main__":
    main()
