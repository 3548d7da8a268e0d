"""`fewbit data info|show`: what a data source holds, and a picture of one sampled task."""

from __future__ import annotations

import argparse
from typing import Any

import torch

from fewbit.cli.common import (
    Output,
    add_common,
    add_data_options,
    data_option_values,
    nonnegative_int,
    positive_int,
    seed_int,
)
from fewbit.data.augment import AUGMENTS
from fewbit.data.episodes import EpisodeSampler
from fewbit.data.registry import spec_help
from fewbit.data.sources import JOINED_SPLIT, SPLITS, load_source
from fewbit.errors import DataError
from fewbit.report.plots import plot_task
from fewbit.report.tables import table
from fewbit.train.run import check_not_run_file


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="inspect data sources")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    info = dsub.add_parser("info", help="groups, classes, images, channels and splits of a source")
    info.add_argument("spec", help=spec_help())
    info.add_argument("--split", default="all", choices=(*SPLITS, JOINED_SPLIT))
    add_data_options(info)
    add_common(info)
    info.set_defaults(handler=run_info)

    show = dsub.add_parser("show", help="write a picture of one sampled task")
    show.add_argument("spec", help=spec_help())
    show.add_argument("--split", default="train", choices=(*SPLITS, JOINED_SPLIT))
    show.add_argument("--ways", type=positive_int, default=5)
    show.add_argument("--shots", type=positive_int, default=1)
    show.add_argument("--queries", type=nonnegative_int, default=3)
    show.add_argument("--rotations", action="store_true", help="count 90-degree rotations as new classes")
    show.add_argument("--augment", default="none", choices=AUGMENTS,
                      help="show the task as training augments it")
    show.add_argument("--seed", type=seed_int, default=0)
    show.add_argument("--out", default="task.png", help="PNG to write (default task.png)")
    add_data_options(show)
    add_common(show)
    show.set_defaults(handler=run_show)


def _source(args: argparse.Namespace) -> Any:
    return load_source(args.spec, progress=not args.json, **data_option_values(args))


def run_info(args: argparse.Namespace) -> Output:
    source = _source(args)
    info = source.info(args.split)
    if source.kind == "regression":
        return Output(info, "\n".join(f"{k}: {v}" for k, v in info.items()))
    rows = [[k, info[k]] for k in source.summary]
    rows.append(["splits (classes / images)", ", ".join(
        f"{k}={v}/{info['split_images'][k]}" for k, v in info["splits"].items())])
    for key in ("layout", "split_rule", "ignored_files", "unreadable_images"):
        if key in info:
            rows.append([key.replace("_", " "), info[key]])
    pre = info.get("preprocessing", {})
    if pre.get("mean") and len(pre["mean"]) <= 16:  # per-channel statistics (a table's are per feature)
        mean = ", ".join(f"{v:.3f}" for v in pre["mean"])
        std = ", ".join(f"{v:.3f}" for v in pre["std"])
        rows.append(["normalisation (mean / std)", f"{mean} / {std}"])
    elif pre.get("norm"):
        rows.append(["preprocessing", f"length {pre['length']} ({pre['length_rule']}), norm {pre['norm']}"])
    text = f"{info['spec']} [{args.split}]\n" + table(["", "value"], rows, left=True)
    return Output(info, text)


def run_show(args: argparse.Namespace) -> Output:

    check_not_run_file(args.out, "--out")

    source = _source(args)
    ds = source.split(args.split) if hasattr(source, "split") else None
    if ds is None or len(ds.input_shape) != 3:
        raise DataError(f"{args.spec} is a {source.kind} source; `data show` draws image and series tasks")
    sampler = EpisodeSampler(
        ds, ways=args.ways, shots=args.shots, queries=args.queries, rotations=args.rotations,
        augment=args.augment, generator=torch.Generator().manual_seed(args.seed),
    )
    task, names = sampler.sample_named(1)
    path = plot_task(task, args.out, title=f"{args.spec} [{args.split}] {args.ways}-way {args.shots}-shot",
                     mean=ds.mean, std=ds.std, class_names=names[0])
    data = {"out": str(path), "ways": args.ways, "shots": args.shots, "queries": args.queries, "split": args.split,
            "classes": names[0]}
    return Output(data, f"wrote {path}")
