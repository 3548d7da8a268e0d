"""`fewbit sweep`: a grid over bits x sparsity x algorithm x (post-hoc | aware), resumable, in parallel."""

from __future__ import annotations

import argparse
from typing import Any

from fewbit.cli.common import Output, add_common, finite_float, nonnegative_int, positive_int, seed_int, task_count
from fewbit.config import load_yaml
from fewbit.errors import ConfigError
from fewbit.meta import algorithm_names
from fewbit.report.tables import table
from fewbit.sweep.grid import SweepConfig, parse_list
from fewbit.sweep.runner import format_row, run_sweep
from fewbit.train import TrainConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="train and evaluate a grid of compressed models; table + Pareto plot")
    p.add_argument("--config", help="YAML sweep file (grid fields and a `base:` mapping of train settings)")
    p.add_argument("--out", required=True, help="sweep folder (rerun the same command to resume)")
    p.add_argument("--workers", type=positive_int, default=1,
                   help="parallel worker processes (--threads is per worker; default: the cores divided among them)")
    p.add_argument("--bits", help="weight bits, e.g. 32,8,4,2 (32 = float)")
    p.add_argument("--sparsity", help="e.g. 0,0.5,0.75")
    p.add_argument("--algorithms", help=f"comma-separated, of {', '.join(algorithm_names())}")
    p.add_argument("--modes", help="aware,posthoc")
    p.add_argument("--act-bits", type=nonnegative_int, help="activation bits of compressed cells (0: float)")
    p.add_argument("--eval-tasks", type=task_count, help="test tasks each cell is scored on (default 600)")
    p.add_argument("--posthoc-finetune-steps", type=nonnegative_int)
    # the train settings every cell shares (override the file's `base:`)
    p.add_argument("--dataset")
    p.add_argument("--backbone")
    p.add_argument("--ways", type=positive_int)
    p.add_argument("--shots", type=positive_int)
    p.add_argument("--queries", type=positive_int)
    p.add_argument("--meta-batch", type=positive_int)
    p.add_argument("--steps", type=nonnegative_int)
    p.add_argument("--outer-lr", type=finite_float)
    p.add_argument("--seed", type=seed_int)
    add_common(p, device=True, threads=True)
    p.set_defaults(handler=run)


def sweep_config(args: argparse.Namespace) -> Any:
    """The SweepConfig from `--config` and the flags (flags win)."""

    data: dict[str, Any] = load_yaml(args.config) if args.config else {}
    if not isinstance(data.get("base") or {}, dict):
        raise ConfigError(f"SweepConfig.base: must be a mapping of train settings, got {type(data['base']).__name__}")
    base = dict(data.get("base") or {})
    for flag, key in (("dataset", "dataset"), ("backbone", "backbone"), ("ways", "ways"), ("shots", "shots"),
                      ("queries", "queries"), ("meta_batch", "meta_batch"), ("steps", "steps"),
                      ("outer_lr", "outer_lr"), ("seed", "seed")):
        value = getattr(args, flag)
        if value is not None:
            base[key] = value
    base.setdefault("device", args.device)
    data["base"] = base
    for flag, kind in (("bits", int), ("sparsity", float), ("algorithms", str), ("modes", str)):
        value = getattr(args, flag)
        if value is not None:
            data[flag] = list(parse_list(value, kind))
    if args.act_bits is not None:
        data["act_bits"] = args.act_bits or None
    if args.eval_tasks is not None:
        data["eval_tasks"] = args.eval_tasks
    if args.posthoc_finetune_steps is not None:
        data["posthoc_finetune_steps"] = args.posthoc_finetune_steps
    return SweepConfig.from_dict(data)


def run(args: argparse.Namespace) -> Output:

    sweep = sweep_config(args)
    TrainConfig.from_dict(dict(sweep.base))  # a bad base fails here, before any work starts
    rows = run_sweep(sweep, args.out, workers=args.workers, progress=not args.json, threads=args.threads)
    headers = ("cell", "accuracy % (95% CI)", "bytes", "x smaller", "adapt ms")
    text = table(headers, [[f[0], f[5], f[6], f[7], f[8]] for f in map(format_row, rows)])
    text += f"\nwrote {args.out}/results.csv, results.md, results.json, pareto.png"
    return Output({"rows": rows, "out": str(args.out)}, text)
