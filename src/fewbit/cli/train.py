"""`fewbit train` and `fewbit eval`: meta-train into a run directory, then score it on test tasks."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path
from typing import Any

from fewbit._io import atomic_write_json, finite_or_none
from fewbit.cli.common import (
    Output,
    add_common,
    add_config_flags,
    add_data_options,
    config_flag_values,
    data_option_values,
    nonnegative_int,
    positive_int,
    seed_int,
    task_count,
)
from fewbit.data.registry import spec_help
from fewbit.errors import ConfigError, shown
from fewbit.evaluation import DEFAULT_EVAL_SEED, evaluate, evaluate_artifact
from fewbit.meta import ALGORITHMS, SCOPES, algorithm_names
from fewbit.meta.base import setting_defaults, setting_fields
from fewbit.meta.views import with_views
from fewbit.pretrained import describe_model, is_model_name
from fewbit.report.cost import adaptation_memory
from fewbit.runtime import load
from fewbit.runtime.images import is_skipped_entry, warn_if_unfit
from fewbit.runtime.preprocess import ImagePreprocessing, is_image_name
from fewbit.runtime.settings import settings_for
from fewbit.runtime.views import VIEWS
from fewbit.train import load_config, load_run, meta_train, resume_training
from fewbit.train.config import TrainConfig, check_task_shape
from fewbit.train.run import EVAL_NAME, eval_dataset

SURVEY_LISTING = 10_000  # image files listed (at most) to sample for `warn_if_unfit`


def _warn_unfit_data(spec: str, preprocessing: Any, model: str, data: str | None) -> None:
    """A warning when a folder of images (`folder:` or `csvsplit:` data) is not what the model was
    trained on (colour for a greyscale model, or the reverse; a size far from its input)."""
    kind, _, root = spec.partition(":")
    if kind not in ("folder", "csvsplit") or not isinstance(preprocessing, ImagePreprocessing):
        return
    files: list[str] = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not is_skipped_entry(d))
        files += [os.path.join(folder, n) for n in sorted(names) if is_image_name(n)]
        if len(files) >= SURVEY_LISTING:
            break
    warn_if_unfit(files, preprocessing, model=model, data=data, what=f"{kind} images")


def _train_fields() -> list[dataclasses.Field[Any]]:
    """TrainConfig's own fields (its nested `meta` and `data` give their own flags; `device` is common)."""
    return [f for f in dataclasses.fields(TrainConfig) if f.name not in ("meta", "data", "device")]


def _algorithms_having() -> dict[str, list[str]]:
    """For each algorithm setting that not every algorithm has: the algorithms that have it."""
    every = set(algorithm_names())
    return {name: algos for name, (_, algos) in setting_defaults().items() if set(algos) != every}


def register(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="meta-train a model into a run directory")
    train.add_argument("--config", help="YAML file of TrainConfig fields (flags override it)")
    train.add_argument("--out", help="run directory to create (default runs/<algorithm>-<dataset kind>)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its newest good checkpoint")
    train.add_argument("--restart", action="store_true",
                       help="with --resume: train the run again from step 0 (its old checkpoints and metrics "
                       "move to RUN_DIR/restarted-<time>/)")
    add_config_flags(train, _train_fields())
    add_config_flags(train, setting_fields().values(), where=_algorithms_having())
    add_data_options(train)
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
    ev.add_argument("--dataset", help=f"evaluate on another data source ({spec_help()})")
    ev.add_argument("--seed", type=seed_int, help="seed of the test task list (default: the evaluation seed)")
    ev.add_argument("--checkpoint", default="best", choices=("best", "last"))
    ev.add_argument("--scope", choices=SCOPES,
                    help="which parameters adapt at test time (default: the run's)")
    ev.add_argument("--inner-steps", type=nonnegative_int, help="inner steps at test time (default: the run's)")
    ev.add_argument("--algorithm", dest="test_algorithm", metavar="NAME",
                    help="adapt at test time with another algorithm that needs no trained head ("
                         + ", ".join(n for n in algorithm_names() if not ALGORITHMS[n].uses_trained_head)
                         + "; default: the run's)")
    ev.add_argument("--views", type=int, choices=VIEWS,
                    help="test-time views: score each task in its 4 rotations or its 8 rotations and mirrors, "
                         "averaging the logits (square images; that many times the work; default 1, or an "
                         "artifact's own)")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    add_common(ev, device=True, threads=True)
    ev.set_defaults(handler=run_eval, device=None)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out = config_flag_values(args, _train_fields())
    out.update(config_flag_values(args, setting_fields().values()))
    out.update(data_option_values(args))
    if args.device is not None:
        out["device"] = args.device
    return out


def run_train(args: argparse.Namespace) -> Output:

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
        "max_steps": run.config.steps, "stopped": run.stopped,
    }
    best = run.best or {}
    if best.get("value") is not None:
        shown = f"{100 * best['value']:.2f}%" if best["metric"] == "accuracy" else f"{best['value']:.4f}"
        text = (f"trained {run.config.algorithm} for {run.step} steps into {run.run_dir}; "
                f"best val {best['metric']} {shown} at step {best['step']}")
    else:
        text = f"trained {run.config.algorithm} for {run.step} steps into {run.run_dir}"
    if run.stopped:
        text += f"\n{run.stopped}"
    return Output(data, text)


def run_eval(args: argparse.Namespace) -> Output:
    import warnings

    import torch


    if (args.run_dir is None) == (args.model is None):
        raise ConfigError("eval: give a run directory or --model NAME|FILE (one of them)")
    if args.model is not None:
        return _eval_artifact(args)
    run = load_run(args.run_dir, checkpoint=args.checkpoint, device=args.device)
    config = run.config
    task_ways = 1 if config.regression else (args.ways or config.ways)
    check_task_shape("eval", ways=task_ways, shots=args.shots or config.shots, queries=args.queries or config.queries,
                     tasks=1)  # one task within the limits; `evaluate` draws as many at a time as the bound allows
    run.test_time(scope=args.scope, eval_inner_steps=args.inner_steps, algorithm=args.test_algorithm)
    spec = args.dataset or config.dataset
    if args.dataset is not None and args.dataset != config.dataset:
        _warn_unfit_data(args.dataset, run.preprocessing, f"the run {args.run_dir}", config.dataset)
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
        device=run.device, progress=not (args.quiet or args.json),
    )
    data = {k: finite_or_none(v) for k, v in result.to_dict().items()}
    data.update({"dataset": spec, "split": args.split, "seed": seed, "algorithm": config.algorithm,
                 "checkpoint": args.checkpoint, "step": run.step, "views": views})
    if dataset is not None:

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
    _warn_unfit_data(args.dataset, model.prep, *describe_model(args.model))
    dataset = eval_dataset(args.dataset, args.split, None, model.prep, progress)
    if dataset is None:
        raise ConfigError(f"eval --model: {args.dataset} is a regression family; artifacts classify")
    seed = DEFAULT_EVAL_SEED if args.seed is None else args.seed
    try:
        views = settings_for(model, views=args.views)["views"]  # the artifact's own unless --views
        result = evaluate_artifact(model, dataset, ways=ways, shots=shots, queries=queries, tasks=args.tasks,
                                   seed=seed, progress=progress, views=views)
    except ValueError as exc:
        raise ConfigError(f"eval --model: {exc}") from None
    data = {k: finite_or_none(v) for k, v in result.to_dict().items()}
    data.update({"model": args.model, "dataset": args.dataset, "split": args.split, "seed": seed,
                 "algorithm": model.algorithm, "runtime": "numpy", "views": views})
    return Output(data, f"{args.model} on {args.dataset} [{args.split}], numpy runtime: {result}")
