"""`fewbit search`: the most accurate per-layer bits and sparsity whose `.fewbit` file fits a byte budget."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from fewbit.cli.common import (
    Output,
    add_common,
    add_config_flags,
    add_data_options,
    nonnegative_int,
    positive_int,
    seed_int,
    task_count,
)
from fewbit.cli.train import _overrides, _train_fields
from fewbit.config import load_yaml
from fewbit.errors import ConfigError
from fewbit.meta.base import setting_fields
from fewbit.report.tables import table
from fewbit.search import SearchConfig, search
from fewbit.search.search import CONFIG_NAME
from fewbit.sweep.grid import parse_list


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="search per-layer bits and sparsity under a byte budget; train and export "
                                      "the winner")
    p.add_argument("--config", help="YAML: SearchConfig fields and a `train:` mapping of TrainConfig fields")
    p.add_argument("--out", required=True, help="search folder: OUT/search.json, OUT/<budget>/run, model.fewbit")
    p.add_argument("--budget", help="the .fewbit file's size limit, everything counted: 24K, 24576, 1.5M (K = 1024)")
    p.add_argument("--budgets", help="several budgets in one call (12K,16K,24K,32K,48K): the frontier and its plot")
    p.add_argument("--from", dest="from_run", metavar="RUN",
                   help="start from this run's weights (default: a float pilot run of --pilot-steps first)")
    p.add_argument("--bits", help="weight bits each layer may take (default 1,2,3,4,8)")
    p.add_argument("--sparsity", help="sparsities each layer may take (default 0,0.25,0.5,0.75,0.9)")
    p.add_argument("--patterns", help="unstructured,channel (default both)")
    p.add_argument("--act-bits", type=nonnegative_int, help="input activation bits of every layer (0: float; "
                                                              "default 8)")
    p.add_argument("--lsq", action="store_true", default=None, help="learned quantizer steps (LSQ)")
    p.add_argument("--episodes", type=positive_int, help="meta-training tasks the sensitivity is measured on "
                                                           "(default 100)")
    p.add_argument("--sensitivity", choices=("measured", "fisher"),
                   help="measured: each option's query-loss increase on the episodes (default); fisher: estimated "
                        "from gradients, far cheaper (episodic algorithms)")
    p.add_argument("--top-k", type=positive_int, help="plans re-ranked by short training (default 3)")
    p.add_argument("--rerank-steps", type=nonnegative_int, help="training steps of each re-ranked plan (default 50)")
    p.add_argument("--rerank-tasks", type=task_count, help="validation tasks each plan is scored on (default 100)")
    p.add_argument("--pilot-steps", type=positive_int, help="steps of the float pilot run without --from "
                                                             "(default 300)")
    p.add_argument("--slack", type=nonnegative_int, help="bytes kept free for what training changes in the file "
                                                          "(default 64)")
    p.add_argument("--eval-tasks", type=nonnegative_int, help="test tasks the final model is scored on (default 0: "
                                                               "validation tasks)")
    p.add_argument("--uniform", type=nonnegative_int,
                   help="per budget, also train this many uniform plans that fit (those of least estimated loss "
                        "increase), as the winner is: the comparison, and the plot's second series (default 0)")
    p.add_argument("--search-seed", type=seed_int, help="seed of the search's tasks (default 0)")
    p.add_argument("--resume", action="store_true",
                   help="continue the search in --out: its tables are read back, finished trainings kept, "
                        "unfinished ones resumed (alone, `--out OUT --resume` takes the settings OUT records)")
    add_config_flags(p, _train_fields())
    add_config_flags(p, setting_fields().values())
    add_data_options(p)
    add_common(p, device=True, threads=True)
    p.set_defaults(handler=run_search, device=None)


def search_config(args: argparse.Namespace) -> SearchConfig:
    """The SearchConfig from `--config` and the flags (flags win)."""
    data: dict[str, Any] = load_yaml(args.config) if args.config else {}
    if not isinstance(data, dict):
        raise ConfigError("SearchConfig: the --config file must hold a mapping")
    train = data.get("train") or {}
    if not isinstance(train, dict):
        raise ConfigError("SearchConfig.train: must be a mapping of TrainConfig fields")
    data["train"] = {**train, **_overrides(args)}
    if args.budget is not None and args.budgets is not None:
        raise ConfigError("search: give --budget or --budgets, not both")
    if args.budget is not None or args.budgets is not None:
        data.pop("budget", None)
        data["budgets"] = args.budget if args.budget is not None else args.budgets
    for flag, kind in (("bits", int), ("sparsity", float), ("patterns", str)):
        value = getattr(args, flag)
        if value is not None:
            data[flag] = list(parse_list(value, kind))
    for flag, key in (("act_bits", "act_bits"), ("lsq", "lsq"), ("episodes", "episodes"),
                      ("sensitivity", "sensitivity"), ("top_k", "top_k"),
                      ("rerank_steps", "rerank_steps"), ("rerank_tasks", "rerank_tasks"),
                      ("pilot_steps", "pilot_steps"), ("slack", "slack"), ("eval_tasks", "eval_tasks"),
                      ("uniform", "uniform"), ("search_seed", "seed")):
        value = getattr(args, flag)
        if value is not None:
            data[key] = (value or None) if flag == "act_bits" else value
    return SearchConfig.from_dict(data)


def recorded_only(args: argparse.Namespace) -> bool:
    """Whether `--resume` came without the settings that say what to search (then OUT's record says)."""
    return args.config is None and args.budget is None and args.budgets is None and args.dataset is None


def recorded(out: str) -> tuple[SearchConfig, str | None]:
    """The config and start run that the search in `out` recorded; ConfigError when it holds none."""
    path = Path(out) / CONFIG_NAME
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        return SearchConfig.from_dict(record["config"]), record["from_run"]
    except FileNotFoundError:
        raise ConfigError(f"--resume: {out} holds no search to continue (no {CONFIG_NAME})") from None
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        raise ConfigError(f"--resume: {path} is unreadable; give the search's settings again") from None


def run_search(args: argparse.Namespace) -> Output:
    import sys

    from tqdm import tqdm

    if args.resume and recorded_only(args):
        config, from_run = recorded(args.out)
    else:
        config, from_run = search_config(args), args.from_run
    log = None if args.json else (lambda line: tqdm.write(f"search: {line}", file=sys.stderr))
    result = search(config, args.out, from_run=from_run, progress=False, log=log, resume=args.resume)
    lines = []
    for r in result.results:
        rows = [[("*" if c["chosen"] else ""), f"{c['bytes']:,}", f"{c['estimated_loss_increase']:+.4f}",
                 f"{100 * c['val_accuracy']:.2f} +- {100 * c['val_ci95']:.2f}", c["spec"]] for c in r.candidates]
        lines.append(f"budget {r.budget:,} B")
        lines.append(table(("", "bytes", "est. loss increase", "val accuracy % (short training)", "spec"), rows))
        acc = f"{100 * r.accuracy:.2f} +- {100 * r.ci95:.2f}%" if r.accuracy is not None else "-"
        lines.append(f"winner trained to the end: {r.bytes:,} B, {r.scored_on} accuracy {acc} -> {r.artifact}")
        for u in r.uniform:
            lines.append(f"  uniform {u['label']} trained alike: {u['bytes']:,} B, {u['scored_on']} accuracy "
                         f"{100 * u['accuracy']:.2f} +- {100 * u['ci95']:.2f}%")
    if result.plot:
        lines.append(f"plot: {result.plot}")
    lines.append(f"wrote {result.out}/search.json ({result.seconds:.0f} s)")
    return Output(result.to_dict(), "\n".join(lines))
