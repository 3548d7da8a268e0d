"""`fewbit train` and `fewbit eval`: meta-train into a run directory, then score it on test tasks."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fewbit.cli.common import (
    Output,
    add_common,
    add_data_options,
    data_option_values,
    finite_float,
    nonnegative_int,
    positive_int,
    seed_int,
    task_count,
)
from fewbit.data.augment import AUGMENTS
from fewbit.data.sources import SPEC_HELP
from fewbit.runtime.views import VIEWS
from fewbit.train.config import SCHEDULES, TRAIN_ON

EVAL_BATCH = 25  # tasks scored at once (fewer when they are large: see MAX_STEP_IMAGES)
ALGORITHM_HELP = "maml | fomaml | metasgd | anil | reptile | protonet | finetune | metabaseline | simpleshot"

# flag -> TrainConfig / MetaConfig field (None-valued flags leave the config file's value alone)
_FLAG_FIELDS = {
    "dataset": "dataset", "algorithm": "algorithm", "backbone": "backbone", "ways": "ways", "shots": "shots",
    "queries": "queries", "meta_batch": "meta_batch", "inner_steps": "inner_steps", "inner_lr": "inner_lr",
    "outer_lr": "outer_lr", "steps": "steps", "seed": "seed", "val_every": "val_every", "val_tasks": "val_tasks",
    "schedule": "schedule", "grad_clip": "grad_clip", "first_order": "first_order", "scope": "scope",
    "checkpoint_every": "checkpoint_every", "batch_size": "batch_size", "rotations": "rotations",
    "compress": "compress", "augment": "augment", "within_group": "within_group", "init_from": "init_from",
    "train_on": "train_on", "teacher": "teacher", "teacher_weight": "teacher_weight",
}


def register(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="meta-train a model into a run directory")
    train.add_argument("--config", help="YAML file of TrainConfig fields (flags override it)")
    train.add_argument("--out", help="run directory to create (default runs/<algorithm>-<dataset kind>)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its newest good checkpoint")
    train.add_argument("--restart", action="store_true",
                       help="with --resume: train the run again from step 0 (its old checkpoints and metrics "
                       "move to RUN_DIR/restarted-<time>/)")
    train.add_argument("--dataset", help=SPEC_HELP)
    train.add_argument("--algorithm", help=ALGORITHM_HELP)
    train.add_argument("--backbone", help="mlp | conv4 | resnet12 | auto")
    train.add_argument("--ways", type=positive_int)
    train.add_argument("--shots", type=positive_int)
    train.add_argument("--queries", type=positive_int)
    train.add_argument("--meta-batch", type=positive_int, help="tasks per outer step")
    train.add_argument("--inner-steps", type=int, help="inner-loop gradient steps")
    train.add_argument("--inner-lr", type=finite_float)
    train.add_argument("--outer-lr", type=finite_float)
    train.add_argument("--steps", type=nonnegative_int, help="outer steps")
    train.add_argument("--seed", type=seed_int)
    train.add_argument("--val-every", type=nonnegative_int, help="validate every N steps (0: never)")
    train.add_argument("--val-tasks", type=task_count, help="validation tasks (default 100)")
    train.add_argument("--checkpoint-every", type=nonnegative_int)
    train.add_argument("--batch-size", type=positive_int, help="images per step for finetune")
    train.add_argument("--schedule", choices=SCHEDULES,
                       help="outer learning rate: cosine decay to 0 (default) or constant")
    train.add_argument("--grad-clip", type=finite_float)
    train.add_argument("--scope", help="which parameters adapt: all | head | bias_norm | none")
    train.add_argument("--first-order", action="store_const", const=True, default=None)
    train.add_argument("--rotations", action="store_const", const=True, default=None,
                       help="count 90-degree rotations as new classes")
    train.add_argument("--augment", choices=AUGMENTS,
                       help="seeded augmentation of training tasks: auto = photo (crop, flip, colour jitter) for "
                            "colour data, glyph (small affine) for greyscale; ink = glyph plus elastic "
                            "distortion and thicker strokes (handwriting)")
    train.add_argument("--within-group", action="store_const", const=True, default=None,
                       help="draw each training task's classes from one group (alphabet)")
    train.add_argument("--train-on", choices=TRAIN_ON,
                       help="train on the training classes (default), or on the validation classes too for a "
                            "final model once validation has chosen the recipe (needs --val-every 0)")
    add_data_options(train, defaults=False)
    train.add_argument("--compress", metavar="SPEC", help="compress the model before meta-training")
    train.add_argument("--init-from", metavar="RUN_DIR",
                       help="start from a run's weights (those that fit), e.g. a classifier pre-trained with "
                            "--algorithm simpleshot before --algorithm metabaseline")
    train.add_argument("--teacher", metavar="RUN_DIR",
                       help="distil a finished supervised run into this one (born-again: train the recipe "
                            "again with the first run as --teacher)")
    train.add_argument("--teacher-weight", type=float, metavar="W",
                       help="the distillation loss's share of the loss, in (0, 1] (default 0.5)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    add_common(train, device=True, threads=True)
    train.set_defaults(handler=run_train, device=None)

    ev = sub.add_parser("eval", help="score a run or an artifact on seeded test tasks (accuracy +- 95%% CI)")
    ev.add_argument("run_dir", metavar="RUN_DIR", nargs="?", help="a run directory (fewbit train)")
    ev.add_argument("--model", metavar="NAME|FILE",
                    help="score a shipped model (`fewbit models`) or a .fewbit artifact in the numpy runtime "
                         "instead; needs --dataset")
    ev.add_argument("--tasks", type=task_count, default=600, help="test tasks to score (default 600)")
    ev.add_argument("--ways", type=positive_int, help="default: the run's")
    ev.add_argument("--shots", type=positive_int, help="default: the run's")
    ev.add_argument("--queries", type=positive_int, help="default: the run's")
    ev.add_argument("--split", default="test", choices=("train", "val", "test", "all"))
    ev.add_argument("--dataset", help=f"evaluate on another data source ({SPEC_HELP})")
    ev.add_argument("--seed", type=seed_int, help="seed of the test task list (default: the evaluation seed)")
    ev.add_argument("--checkpoint", default="best", choices=("best", "last"))
    ev.add_argument("--scope", choices=("all", "head", "bias_norm", "none"),
                    help="which parameters adapt at test time (default: the run's)")
    ev.add_argument("--inner-steps", type=nonnegative_int, help="inner steps at test time (default: the run's)")
    ev.add_argument("--algorithm", dest="test_algorithm", metavar="NAME",
                    help="adapt at test time with another algorithm that needs no trained head "
                         "(protonet, simpleshot, ...; default: the run's)")
    ev.add_argument("--views", type=int, choices=VIEWS,
                    help="test-time views: score each task in its 4 rotations or its 8 rotations and mirrors, "
                         "averaging the logits (square images; that many times the work; default 1, or an "
                         "artifact's own)")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    add_common(ev, device=True, threads=True)
    ev.set_defaults(handler=run_eval, device=None)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out = {field: getattr(args, flag) for flag, field in _FLAG_FIELDS.items() if getattr(args, flag, None) is not None}
    out.update(data_option_values(args))
    if args.device is not None:
        out["device"] = args.device
    return out


def run_train(args: argparse.Namespace) -> Output:
    from fewbit.errors import ConfigError
    from fewbit.train import load_config, meta_train, resume_training

    progress = not (args.quiet or args.json)
    if args.restart and not args.resume:
        raise ConfigError("--restart trains an existing run again from step 0; give it with --resume RUN_DIR")
    if args.resume:
        extra = sorted(k for k in _overrides(args) if k not in ("steps", "device"))
        if args.config or extra or args.out:
            given = ["--config"] * bool(args.config) + ["--out"] * bool(args.out)
            given += [f"--{k.replace('_', '-')}" for k in extra]
            raise ConfigError(
                f"--resume takes the run's own config; only --steps and --device may change, not {', '.join(given)}"
            )
        run = resume_training(args.resume, steps=args.steps, device=args.device, progress=progress,
                              restart=args.restart)
    else:
        config = load_config(args.config, **_overrides(args))
        out = Path(args.out) if args.out else Path("runs") / f"{config.algorithm}-{config.dataset.partition(':')[0]}"
        run = meta_train(config, out, progress=progress)
    data: dict[str, Any] = {
        "run_dir": str(run.run_dir), "algorithm": run.config.algorithm, "steps": run.step, "best": run.best,
    }
    best = run.best or {}
    if best.get("value") is not None:
        shown = f"{100 * best['value']:.2f}%" if best["metric"] == "accuracy" else f"{best['value']:.4f}"
        text = (f"trained {run.config.algorithm} for {run.step} steps into {run.run_dir}; "
                f"best val {best['metric']} {shown} at step {best['step']}")
    else:
        text = f"trained {run.config.algorithm} for {run.step} steps into {run.run_dir}"
    return Output(data, text)


def run_eval(args: argparse.Namespace) -> Output:
    import warnings

    import torch

    from fewbit._io import atomic_write_json, finite_or_none
    from fewbit.errors import ConfigError
    from fewbit.evaluation import DEFAULT_EVAL_SEED, evaluate
    from fewbit.meta.views import with_views
    from fewbit.train import load_run
    from fewbit.train.config import MAX_STEP_IMAGES, check_task_shape
    from fewbit.train.run import EVAL_NAME, eval_dataset

    if (args.run_dir is None) == (args.model is None):
        raise ConfigError("eval: give a run directory or --model NAME|FILE (one of them)")
    if args.model is not None:
        return _eval_artifact(args)
    run = load_run(args.run_dir, checkpoint=args.checkpoint, device=args.device)
    config = run.config
    task_ways = 1 if config.regression else (args.ways or config.ways)
    per_task = task_ways * ((args.shots or config.shots) + (args.queries or config.queries))
    check_task_shape("eval", ways=task_ways, shots=args.shots or config.shots, queries=args.queries or config.queries,
                     tasks=1)
    batch = max(1, min(EVAL_BATCH, MAX_STEP_IMAGES // per_task))  # large tasks are scored fewer at a time
    run.test_time(scope=args.scope, eval_inner_steps=args.inner_steps, algorithm=args.test_algorithm)
    spec = args.dataset or config.dataset
    dataset = eval_dataset(spec, args.split, config, run.preprocessing, progress=not (args.quiet or args.json))
    ways = args.ways or config.ways
    shots = args.shots or config.shots
    queries = args.queries or config.queries
    seed = DEFAULT_EVAL_SEED if args.seed is None else args.seed
    if ways != config.ways and run.algorithm.uses_trained_head and not config.regression:
        raise ConfigError(
            f"--ways: this {config.algorithm} run classifies {config.ways} ways with its head; "
            f"evaluate it with --ways {config.ways} (protonet and finetune runs take any --ways)"
        )
    predictor, views = run.predictor(), args.views or 1
    if dataset is not None:
        try:
            predictor = with_views(predictor, views, run.input_shape)
        except ValueError as exc:
            raise ConfigError(f"--views: {exc}") from None
    elif views != 1:
        raise ConfigError("--views: a regression family has no images to turn; use --views 1")
    result = evaluate(
        predictor, dataset, ways=ways, shots=shots, queries=queries, tasks=args.tasks, seed=seed,
        device=run.device, progress=not (args.quiet or args.json), batch=batch,
    )
    data = {k: finite_or_none(v) for k, v in result.to_dict().items()}
    data.update({"dataset": spec, "split": args.split, "seed": seed, "algorithm": config.algorithm,
                 "checkpoint": args.checkpoint, "step": run.step, "views": views})
    if dataset is not None:
        from fewbit.report.cost import adaptation_memory

        example = torch.zeros(ways * shots, *run.input_shape, device=run.device)
        memory = adaptation_memory(run.model, run.algorithm.test_scope, example)
        data["adaptation_memory"] = memory.to_dict()
    try:
        atomic_write_json(Path(args.run_dir) / EVAL_NAME, data)
    except OSError as exc:  # a read-only run: the score is still worth printing
        warnings.warn(f"could not write {Path(args.run_dir) / EVAL_NAME} ({exc.strerror or exc}); "
                      "the result is printed only", stacklevel=1)
    text = f"{config.algorithm} on {spec} [{args.split}]: {result}"
    if "adaptation_memory" in data:
        m = data["adaptation_memory"]
        text += (f"\non-device adaptation ({m['scope']}): {m['param_bytes']:,} B of parameters updated + "
                 f"{m['activation_bytes']:,} B of activations = {m['total_bytes']:,} B")
    return Output(data, text)


def _eval_artifact(args: argparse.Namespace) -> Output:
    """`fewbit eval --model NAME|FILE --dataset SPEC`: the artifact scored in the numpy runtime (what ships)."""
    import os

    from fewbit._io import finite_or_none
    from fewbit.data.sources import DataOptions
    from fewbit.errors import ConfigError, shown
    from fewbit.evaluation import DEFAULT_EVAL_SEED, evaluate_artifact
    from fewbit.pretrained import is_model_name
    from fewbit.runtime import load
    from fewbit.runtime.settings import settings_for
    from fewbit.train.config import MAX_STEP_IMAGES, check_task_shape
    from fewbit.train.run import eval_dataset

    if args.dataset is None:
        raise ConfigError("eval --model: give the data to score it on with --dataset SPEC "
                          "(e.g. folder:DIR, omniglot-minimal:DIR)")
    given = [f"--{f.replace('_', '-')}" for f in ("scope", "inner_steps") if getattr(args, f) is not None]
    given += ["--algorithm"] * (args.test_algorithm is not None)
    if given:
        raise ConfigError(f"eval --model: an artifact adapts as its manifest says; {', '.join(given)} apply to runs")
    if not os.path.exists(args.model) and not is_model_name(args.model):
        raise ConfigError(f"eval --model: '{shown(args.model)}' is neither a .fewbit file nor a shipped model "
                          "(see fewbit models)")
    model = load(args.model)
    progress = not (args.quiet or args.json)
    ways = args.ways or (model.ways if model.adaptation.get("method") == "sgd" and model.ways else 5)
    shots, queries = args.shots or 1, args.queries or 15
    check_task_shape("eval", ways=ways, shots=shots, queries=queries, tasks=1)  # tasks are drawn a batch at a time
    batch = max(1, min(EVAL_BATCH, MAX_STEP_IMAGES // (ways * (shots + queries))))
    dataset = eval_dataset(args.dataset, args.split, DataOptions(progress=progress), model.prep, progress)
    if dataset is None:
        raise ConfigError(f"eval --model: {args.dataset} is a regression family; artifacts classify")
    seed = DEFAULT_EVAL_SEED if args.seed is None else args.seed
    try:
        views = settings_for(model, views=args.views)["views"]  # the artifact's own unless --views
        result = evaluate_artifact(model, dataset, ways=ways, shots=shots, queries=queries, tasks=args.tasks,
                                   seed=seed, batch=batch, progress=progress, views=views)
    except ValueError as exc:
        raise ConfigError(f"eval --model: {exc}") from None
    data = {k: finite_or_none(v) for k, v in result.to_dict().items()}
    data.update({"model": args.model, "dataset": args.dataset, "split": args.split, "seed": seed,
                 "algorithm": model.algorithm, "runtime": "numpy", "views": views})
    return Output(data, f"{args.model} on {args.dataset} [{args.split}], numpy runtime: {result}")
