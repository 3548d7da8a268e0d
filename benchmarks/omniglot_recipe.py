"""Omniglot minimal protocol, fewbit's recipe (configs/omniglot.yaml): accuracy against training
wall time, float32 and w4a8 side by side, and the MAML family started from the recipe's body.

Rows (each with its training wall time on this machine):
  recipe-w4a8, recipe-float32  supervised pre-training over the rotated small1 classes, scored with
                               the head-free cosine-prototype rule the shipped models use
                               (metabaseline); a checkpoint every --every steps gives the curve.
  long-ink-w4a8                the recipe with `augment: ink` (elastic distortion and thicker
                               strokes on top of the glyph warp) for LONG_STEPS steps, within 30
                               minutes of training.
  born-again-w4a8              long-ink-w4a8 trained again with that run as its teacher
                               (`teacher:`, born-again self-distillation: half the loss is the KL
                               divergence to the teacher's softened scores, T = 4): the longest
                               budget of one generation, teacher and student together.
  born-again2-w4a8             born-again-w4a8 trained again with that run as its teacher (a second
                               generation): the longest budget, all three runs together.
  anil-w4a8                    configs/omniglot_anil.yaml: ANIL (a head adapted by SGD, the MAML
                               family) meta-trained from recipe-w4a8's weights (`init_from`).
  anil-fast-w4a8               the same ANIL after a FAST_PRE_STEPS-step pre-training: the MAML
                               family within the wall time maml-150 takes.
  maml-150                     configs/omniglot_maml.yaml from scratch, float32, 150 steps: the
                               budget of the learn2learn comparison (its MAML: 79.4 +- 0.8%).
Every row: 600 seeded 5-way 1-shot test tasks (small2-only alphabets) at the end, 20-way 1-shot
too; the curve's points use --curve-tasks tasks each. Head-free rows are also scored with VIEWS
test-time views (`fewbit eval --views 8`: each task in its 8 rotations and mirrors, the logits
averaged). Writes JSON and a plot (docs/).

    nice python benchmarks/omniglot_recipe.py --data ../shared/data/omniglot
    nice python benchmarks/omniglot_recipe.py --rows recipe-w4a8 --steps 600 --every 200   # shorter
    nice python benchmarks/omniglot_recipe.py --rows long-ink-w4a8 --rescore   # score the kept run again
    nice python benchmarks/omniglot_recipe.py --rows born-again2-w4a8 --adopt DIR  # a run trained elsewhere
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from fewbit._io import atomic_write_json
from fewbit.evaluation import evaluate
from fewbit.meta.views import with_views
from fewbit.train import TrainConfig, load_run, meta_train
from fewbit.train.checkpoint import EXTRAS, MODEL, load_checkpoint, step_checkpoints
from fewbit.train.run import eval_dataset, train_times

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "configs" / "omniglot.yaml"
MAML_RECIPE = ROOT / "configs" / "omniglot_maml.yaml"
LEARN2LEARN_150 = 0.794  # learn2learn's second-order MAML, same settings and tasks (issue 11's figure)
TEST_RULE = "metabaseline"  # cosine to the class means: what `fewbit export --algorithm metabaseline` ships
ANIL_RECIPE = ROOT / "configs" / "omniglot_anil.yaml"
LONG_STEPS = 8000
VIEWS = 8  # test-time views scored beside the plain rule (fewbit.meta.views)
FAST_PRE_STEPS = 1500  # anil-fast-w4a8's pre-training: with ANIL's 400 steps, less wall time than maml-150
# row: (how it builds on another row's run, that row)
BEFORE = {"anil-w4a8": ("init_from", "recipe-w4a8"), "born-again-w4a8": ("teacher", "long-ink-w4a8"),
          "born-again2-w4a8": ("teacher", "born-again-w4a8")}


def recipe(spec: str, path: Path = RECIPE, **overrides: Any) -> TrainConfig:
    """A recipe of configs/ with `overrides` (meta keys flattened as TrainConfig takes them)."""
    raw = yaml.safe_load(path.read_text())
    raw.update(raw.pop("meta"))
    raw.update(dataset=spec, device="cpu", **overrides)
    return TrainConfig.from_dict(raw)


def score(run: Any, test: Any, ways: int, tasks: int, views: int = 1) -> dict[str, Any]:
    start = time.perf_counter()
    predictor = with_views(run.predictor(), views, run.input_shape)
    r = evaluate(predictor, test, ways=ways, shots=1, queries=15 if ways == 5 else 5, tasks=tasks)
    return {"accuracy": round(r.value, 5), "ci95": round(r.ci95, 5), "tasks": r.tasks,
            "eval_seconds": round(time.perf_counter() - start, 1)}


def curve(run_dir: Path, test: Any, tasks: int, test_rule: str | None) -> list[dict[str, Any]]:
    """(step, train wall seconds, 5-way 1-shot accuracy) of every step checkpoint the run kept."""
    times = train_times(run_dir)
    run = load_run(run_dir, checkpoint="last")
    run.test_time(algorithm=test_rule)
    points = []
    for path in sorted(step_checkpoints(run_dir / "checkpoints")):
        ckpt = load_checkpoint(path)
        step = int(path.stem.split("-")[1])
        run.model.load_state_dict(ckpt.group(MODEL))
        with torch.no_grad():  # learned extras too (LSLR rates, a temperature) as they were at that step
            for name, value in ckpt.group(EXTRAS).items():
                if name in run.extras:
                    run.extras[name].copy_(value)
        points.append({"step": step, "train_seconds": round(times[step], 1), **score(run, test, 5, tasks)})
        print(f"  step {step}: {100 * points[-1]['accuracy']:.2f}% at {times[step]:.0f} s", flush=True)
    return points


def artifact_bytes(run_dir: Path, test_rule: str | None) -> int:
    from fewbit.deploy import export

    run = load_run(run_dir, checkpoint="last")
    run.test_time(algorithm=test_rule)
    out = run_dir / "model.fewbit"
    prep = run.preprocessing.to_dict() if run.preprocessing is not None else None
    return export(run.model, out, algorithm=run.algorithm, extras=run.extras, preprocessing=prep)["bytes"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "omniglot"))
    parser.add_argument("--rows",
                        default="recipe-w4a8,recipe-float32,long-ink-w4a8,born-again-w4a8,born-again2-w4a8,"
                                "anil-w4a8,anil-fast-w4a8,maml-150")
    parser.add_argument("--steps", type=int, help="recipe steps (default: the recipe's)")
    parser.add_argument("--every", type=int, default=500, help="a curve point every this many steps")
    parser.add_argument("--anil-steps", type=int, help="ANIL steps (default: configs/omniglot_anil.yaml's)")
    parser.add_argument("--curve-tasks", type=int, default=200)
    parser.add_argument("--tasks", type=int, default=600)
    parser.add_argument("--workdir", default="/tmp/fewbit-bench/omniglot-recipe")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "omniglot_recipe.json"))
    parser.add_argument("--plot", default=str(ROOT / "docs" / "learning_curve.png"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--plot-only", action="store_true", help="redraw the plot from --out's JSON")
    parser.add_argument("--adopt", metavar="DIR",
                        help="score the finished run in DIR (one row's exact config, trained elsewhere) as that "
                             "row instead of training it; its training time is the run's own")
    parser.add_argument("--rescore", action="store_true",
                        help="score the rows' kept runs in --workdir again (the views too) without training; "
                             "their training figures stay as --out has them")
    args = parser.parse_args()
    if args.plot_only:
        plot(json.loads(Path(args.out).read_text()), Path(args.plot))
        return
    if args.adopt and (len(args.rows.split(",")) != 1 or args.rescore):
        parser.error("--adopt takes one row (--rows NAME) and no --rescore")
    if args.adopt and Path(args.adopt).resolve() == (Path(args.workdir) / args.rows).resolve():
        parser.error("--adopt: DIR is the row's own run directory, which the benchmark replaces")
    torch.set_num_threads(args.threads)
    spec = f"omniglot-minimal:{Path(args.data).resolve()}"
    test = eval_dataset(spec, "test")
    report: dict[str, Any] = {"benchmark": "omniglot_recipe", "dataset": spec, "recipe": str(RECIPE.relative_to(ROOT)),
                              "test_rule": TEST_RULE, "torch": torch.__version__, "threads": args.threads,
                              "machine": platform.processor() or platform.machine(), "rows": []}
    earlier = json.loads(Path(args.out).read_text()).get("rows", []) if Path(args.out).is_file() else []
    # keep rows of earlier invocations that this one does not redo
    report["rows"] = [r for r in earlier if r["row"] not in args.rows.split(",")]
    if args.rescore:
        rescore(report, {r["row"]: r for r in earlier}, args, test)
        return
    for row in args.rows.split(","):
        run_dir = Path(args.workdir) / row
        shutil.rmtree(run_dir, ignore_errors=True)
        keep = 1 + (args.steps or 3000) // args.every
        if row.startswith("recipe"):
            overrides: dict[str, Any] = {"compress": None} if row.endswith("float32") else {}  # else the recipe's
            if args.steps:
                overrides["steps"] = args.steps
            config = recipe(spec, checkpoint_every=args.every, keep_checkpoints=keep, **overrides)
            test_rule: str | None = TEST_RULE
        elif row == "long-ink-w4a8":
            steps = args.steps or LONG_STEPS
            config = recipe(spec, augment="ink", steps=steps, checkpoint_every=1000, keep_checkpoints=1 + steps // 1000)
            test_rule = TEST_RULE
        elif row in ("born-again-w4a8", "born-again2-w4a8"):
            steps = args.steps or LONG_STEPS
            config = recipe(spec, augment="ink", steps=steps, teacher=str(Path(args.workdir) / BEFORE[row][1]),
                            checkpoint_every=1000, keep_checkpoints=1 + steps // 1000)
            test_rule = TEST_RULE
        elif row == "anil-w4a8":
            base = Path(args.workdir) / "recipe-w4a8"
            config = recipe(spec, ANIL_RECIPE, init_from=str(base), val_every=0,
                            checkpoint_every=100, keep_checkpoints=10,
                            **({"steps": args.anil_steps} if args.anil_steps else {}))
            test_rule = None
        elif row == "anil-fast-w4a8":  # the MAML family within the wall time of maml-150's 150 steps
            pre_dir = Path(args.workdir) / f"{row}-pre"
            shutil.rmtree(pre_dir, ignore_errors=True)
            start = time.perf_counter()
            meta_train(recipe(spec, steps=FAST_PRE_STEPS, checkpoint_every=FAST_PRE_STEPS), pre_dir, progress=False)
            pre_seconds = time.perf_counter() - start
            config = recipe(spec, ANIL_RECIPE, init_from=str(pre_dir), val_every=0, checkpoint_every=100,
                            keep_checkpoints=10)
            test_rule = None
        elif row == "maml-150":
            config = recipe(spec, MAML_RECIPE, steps=150, val_every=0, checkpoint_every=50, keep_checkpoints=4)
            test_rule = None
        else:
            raise SystemExit(f"unknown row {row}")
        print(f"{row}: {config.steps} steps", flush=True)
        if args.adopt:
            train_seconds = adopt(Path(args.adopt), run_dir, config)
        else:
            start = time.perf_counter()
            meta_train(config, run_dir, progress=False)
            train_seconds = time.perf_counter() - start
        entry: dict[str, Any] = {"row": row, "algorithm": config.algorithm, "compress": config.compress,
                                 "steps": config.steps, "train_seconds": round(train_seconds, 1),
                                 "test_rule": test_rule or config.algorithm,
                                 "curve": curve(run_dir, test, args.curve_tasks, test_rule)}
        if row in BEFORE:  # trained on top of another row's run: its time counts too
            how, before = BEFORE[row]
            entry[how] = before
            base_seconds = next((elapsed(r) for r in report["rows"] if r["row"] == before), None)
            entry["total_train_seconds"] = round(train_seconds + base_seconds, 1) if base_seconds else None
        if row == "anil-fast-w4a8":
            entry.update(pre_train_steps=FAST_PRE_STEPS, pre_train_seconds=round(pre_seconds, 1),
                         total_train_seconds=round(pre_seconds + train_seconds, 1), learn2learn_150=LEARN2LEARN_150)
        if row == "maml-150":
            entry["learn2learn_150"] = LEARN2LEARN_150
        run = load_run(run_dir, checkpoint="last")
        run.test_time(algorithm=test_rule)
        entry["5way_1shot"] = score(run, test, 5, args.tasks)
        if not run.algorithm.uses_trained_head:  # a 5-way head (MAML family) classifies 5 ways only
            entry["20way_1shot"] = score(run, test, 20, args.tasks)
        if test_rule is not None:
            entry.update(view_scores(run, test, args.tasks))
        entry["artifact_bytes"] = artifact_bytes(run_dir, test_rule)
        print(f"{row}: 5-way {100 * entry['5way_1shot']['accuracy']:.2f} +- {100 * entry['5way_1shot']['ci95']:.2f}%, "
              f"20-way {100 * entry.get('20way_1shot', {}).get('accuracy', float('nan')):.2f}%, "
              f"{entry['artifact_bytes']:,} B, "
              f"{train_seconds:.0f} s", flush=True)
        report["rows"].append(entry)
        atomic_write_json(args.out, report)
    plot(report, Path(args.plot))


def elapsed(row: dict[str, Any]) -> float:
    """Training wall seconds of a row's model, the runs it builds on included."""
    return row.get("total_train_seconds") or row["train_seconds"]


def adopt(source: Path, run_dir: Path, config: TrainConfig) -> float:
    """Copy the finished run `source`, trained elsewhere with exactly `config`, to `run_dir`; its
    training wall seconds (its metrics' record of the last step)."""
    from fewbit.errors import FewbitFormatError
    from fewbit.train.run import read_run_config

    try:
        kept = read_run_config(source)
    except FewbitFormatError as exc:
        raise SystemExit(f"--adopt: {exc}") from None
    if kept != config:
        raise SystemExit(f"--adopt: {source} was trained with another config than this row's")
    if load_run(source, checkpoint="last").step != config.steps:
        raise SystemExit(f"--adopt: {source} is not finished ({config.steps} steps)")
    shutil.copytree(source, run_dir)
    return train_times(run_dir)[config.steps]


def view_scores(run: Any, test: Any, tasks: int) -> dict[str, Any]:
    """5-way and 20-way 1-shot with VIEWS test-time views."""
    out = {f"5way_1shot_views{VIEWS}": score(run, test, 5, tasks, VIEWS),
           f"20way_1shot_views{VIEWS}": score(run, test, 20, tasks, VIEWS)}
    print(f"  {VIEWS} views: 5-way {100 * out[f'5way_1shot_views{VIEWS}']['accuracy']:.2f} "
          f"+- {100 * out[f'5way_1shot_views{VIEWS}']['ci95']:.2f}%, "
          f"20-way {100 * out[f'20way_1shot_views{VIEWS}']['accuracy']:.2f}%", flush=True)
    return out


def rescore(report: dict[str, Any], earlier: dict[str, dict[str, Any]], args: argparse.Namespace, test: Any) -> None:
    """Score the kept runs of `args.rows` again, with and without views, keeping the training figures
    of their `earlier` rows (from --out)."""
    for row in args.rows.split(","):
        run_dir = Path(args.workdir) / row
        if row not in earlier or not (run_dir / "metrics.jsonl").is_file():
            raise SystemExit(f"--rescore: no {row} row in {args.out} or no run in {run_dir}; train it first")
        entry = earlier[row]
        run = load_run(run_dir, checkpoint="last")
        if entry["steps"] != run.step:
            raise SystemExit(f"--rescore: {run_dir} is not the run of {args.out}'s {row} row (steps differ)")
        run.test_time(algorithm=TEST_RULE if entry["test_rule"] == TEST_RULE else None)
        entry["5way_1shot"] = score(run, test, 5, args.tasks)
        if "20way_1shot" in entry:
            entry["20way_1shot"] = score(run, test, 20, args.tasks)
        if entry["test_rule"] == TEST_RULE:
            entry.update(view_scores(run, test, args.tasks))
        print(f"{row}: 5-way {100 * entry['5way_1shot']['accuracy']:.2f}%", flush=True)
        report["rows"].append(entry)
        atomic_write_json(args.out, report)


def plot(report: dict[str, Any], path: Path) -> None:
    """Accuracy against training wall time: the recipe in float32 and w4a8, and ANIL after it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {r["row"]: r for r in report["rows"]}
    fig, ax = plt.subplots(figsize=(9.6, 4))
    for name, label in (("recipe-float32", "pre-training, float32"), ("recipe-w4a8", "pre-training, w4a8"),
                        ("long-ink-w4a8", "pre-training, w4a8, ink augmentation"),
                        ("born-again-w4a8", "then born-again from it, w4a8, ink"),
                        ("born-again2-w4a8", "then born-again again, w4a8, ink"),
                        ("anil-w4a8", "then ANIL, w4a8")):
        if name not in rows:
            continue
        base = rows.get(BEFORE[name][1]) if name in BEFORE else None
        offset = elapsed(base) if base else 0.0
        points = sorted(rows[name]["curve"], key=lambda p: p["step"])
        xs = [(offset + p["train_seconds"]) / 60 for p in points]
        ys = [100 * p["accuracy"] for p in points]
        line = ax.plot(xs, ys, marker="o", label=label)[0]
        viewed = rows[name].get(f"5way_1shot_views{VIEWS}")
        if viewed:  # the final model scored with test-time views: a star above the curve's end
            ax.plot([(offset + rows[name]["train_seconds"]) / 60], [100 * viewed["accuracy"]], marker="*",
                    markersize=12, linestyle="none", color=line.get_color(),
                    label=f"{label}, {VIEWS} test-time views (600 tasks)")
    ax.set_xlabel("training wall time on 2 CPU cores (minutes)")
    ax.set_ylabel("5-way 1-shot test accuracy (%)")
    ax.set_title("Omniglot minimal, Conv-4 (points: 200 test tasks, +-0.9)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
