"""`fewbit data info|show`: what a data source holds, and a picture of one sampled task."""

from __future__ import annotations

import argparse

import torch

from fewbit.cli.common import Output, add_common, bounded_int, nonnegative_int, positive_int, seed_int, table
from fewbit.data.sources import SPEC_HELP, ImageSource, load_source
from fewbit.errors import DataError

MAX_IMAGE_SIZE = 512  # TrainConfig's and the runtime's limit (tests/cli/test_hostile_cli.py keeps them equal)


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="inspect data sources")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    info = dsub.add_parser("info", help="alphabets, classes, images and image size of a source")
    info.add_argument("spec", help=SPEC_HELP)
    info.add_argument("--split", default="all", choices=("train", "val", "test", "all"))
    info.add_argument("--image-size", type=bounded_int(1, MAX_IMAGE_SIZE), default=28)
    add_common(info)
    info.set_defaults(handler=run_info)

    show = dsub.add_parser("show", help="write a picture of one sampled task")
    show.add_argument("spec", help=SPEC_HELP)
    show.add_argument("--split", default="train", choices=("train", "val", "test", "all"))
    show.add_argument("--ways", type=positive_int, default=5)
    show.add_argument("--shots", type=positive_int, default=1)
    show.add_argument("--queries", type=nonnegative_int, default=3)
    show.add_argument("--rotations", action="store_true", help="count 90-degree rotations as new classes")
    show.add_argument("--seed", type=seed_int, default=0)
    show.add_argument("--image-size", type=bounded_int(1, MAX_IMAGE_SIZE), default=28)
    show.add_argument("--out", default="task.png", help="PNG to write (default task.png)")
    add_common(show)
    show.set_defaults(handler=run_show)


def run_info(args: argparse.Namespace) -> Output:
    source = load_source(args.spec, image_size=args.image_size)
    info = source.info(args.split)
    if source.kind != "images":
        return Output(info, "\n".join(f"{k}: {v}" for k, v in info.items()))
    rows = [[k, info[k]] for k in ("alphabets", "classes", "images", "image_size", "images_per_class_min")]
    rows.append(["splits (classes)", ", ".join(f"{k}={v}" for k, v in info["splits"].items())])
    text = f"{info['spec']} [{args.split}]\n" + table(["", "value"], rows)
    return Output(info, text)


def run_show(args: argparse.Namespace) -> Output:
    from fewbit.data.episodes import EpisodeSampler
    from fewbit.report.plots import plot_task
    from fewbit.train.run import check_not_run_file

    check_not_run_file(args.out, "--out")

    source = load_source(args.spec, image_size=args.image_size)
    if not isinstance(source, ImageSource):
        raise DataError(f"{args.spec} is a regression source; `data show` draws image tasks")
    ds = source.split(args.split)
    sampler = EpisodeSampler(
        ds, ways=args.ways, shots=args.shots, queries=args.queries, rotations=args.rotations,
        generator=torch.Generator().manual_seed(args.seed),
    )
    task = sampler.sample(1)
    path = plot_task(task, args.out, title=f"{args.spec} [{args.split}] {args.ways}-way {args.shots}-shot")
    data = {"out": str(path), "ways": args.ways, "shots": args.shots, "queries": args.queries, "split": args.split}
    return Output(data, f"wrote {path}")
