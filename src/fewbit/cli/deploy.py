"""`fewbit export RUN_DIR --out model.fewbit [--format fewbit|onnx]`,
`fewbit export RUN_DIR|MODEL.fewbit --format c --out DIR` (a C99 library that adapts on the device)
and `fewbit adapt model.fewbit --support DIR --query DIR [--json]` (the torch-free runtime).

`inspect` of a `.fewbit` file lives with `fewbit inspect` (`fewbit.deploy.inspect_artifact`).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import fewbit.runtime as rt
from fewbit.artifact.format import encode_artifact, read_artifact, versus_float32
from fewbit.cli.common import Output, add_common, finite_float, nonnegative_int, positive_int
from fewbit.data.series_files import read_series_source
from fewbit.deploy import artifact_from_model, export
from fewbit.deploy.c_export import CTarget, export_c, input_to_pixels, mcu, report_text, write_task_files
from fewbit.deploy.onnx_export import require_onnx, write_onnx
from fewbit.errors import ConfigError, DataError, LimitError, shown
from fewbit.pretrained import describe_model, model_cards, model_path
from fewbit.report.tables import table
from fewbit.runtime import images, limits
from fewbit.runtime.adapt import check_support_size
from fewbit.runtime.images import (
    ImageFolder,
    is_skipped_entry,
    list_image_folder,
    list_images,
    load_images,
    warn_if_unfit,
)
from fewbit.runtime.preprocess import TablePreprocessing
from fewbit.runtime.series import SERIES_FILE_SUFFIXES, SeriesPreprocessing, read_series_file
from fewbit.runtime.settings import scope_parts
from fewbit.runtime.tables import read_table
from fewbit.runtime.views import VIEWS
from fewbit.train import load_run
from fewbit.train.run import check_not_run_file


def register(sub: argparse._SubParsersAction) -> None:
    exp = sub.add_parser("export", help="write a run's model as a .fewbit artifact, ONNX, or a C library")
    exp.add_argument("run_dir", metavar="RUN_DIR", nargs="?",
                     help="a run directory (fewbit train), or a .fewbit artifact for --format onnx or c")
    exp.add_argument("--model", metavar="NAME", help="a model shipped with fewbit (see `fewbit models`) instead")
    exp.add_argument("--out", help="file (folder for c) to write (default RUN_DIR/model.fewbit, model.onnx, model_c)")
    exp.add_argument("--format", default="fewbit", choices=("fewbit", "onnx", "c"))
    exp.add_argument("--max-ways", type=positive_int, default=20, help="c: most classes a task may have")
    exp.add_argument("--max-support", type=positive_int, default=100, help="c: most support images")
    exp.add_argument("--ram", type=byte_size, default=256 * 1024, help="c: the target's RAM (default 256K)")
    exp.add_argument("--flash", type=byte_size, default=1024 * 1024, help="c: the target's flash (default 1M)")
    exp.add_argument("--mcu", nargs="?", const="", metavar="TASK_DIR",
                     help="c: build the bare-metal image and run it on an emulated Cortex-M4 (QEMU), reporting its "
                          "flash, SRAM, stack and instructions; it adapts to TASK_DIR/support and classifies "
                          "TASK_DIR/query (as fewbit adapt reads them), or to a drawn stroke task")
    exp.add_argument("--force", action="store_true",
                     help="c: write into a folder that holds other files, replacing fewbit's own file names there")
    exp.add_argument("--checkpoint", default="best", choices=("best", "last"))
    exp.add_argument("--algorithm", dest="test_algorithm", metavar="NAME",
                     help="deploy with another algorithm that needs no trained head (e.g. simpleshot for a "
                          "classifier pre-trained with finetune; default: the run's)")
    exp.add_argument(
        "--scope",
        help="what the runtime may adapt: none or head, bias, norm joined by + "
        "(default: from the run's algorithm)",
    )
    add_common(exp, threads=True)
    exp.set_defaults(handler=run_export)

    ad = sub.add_parser(
        "adapt", help="adapt a .fewbit artifact to a support folder and classify a query folder"
    )
    ad.add_argument("artifact", metavar="MODEL", nargs="?", help="a .fewbit artifact")
    ad.add_argument("--model", metavar="NAME", help="a model shipped with fewbit (see `fewbit models`) instead")
    ad.add_argument("--support", required=True, metavar="DIR|CSV",
                    help="one folder of images per class (a table model: a CSV file with its label column)")
    ad.add_argument(
        "--query",
        required=True,
        metavar="DIR|CSV",
        help="images to classify: class folders (named as in --support for an accuracy) or files; "
        "a table model: a CSV file (with the label column for an accuracy)",
    )
    ad.add_argument("--method", choices=("prototypes", "sgd"),
                    help="prototypes (class means) or sgd (fine-tune the head); default: the artifact's")
    ad.add_argument("--steps", type=nonnegative_int, help="fine-tuning SGD steps (default: the artifact's)")
    ad.add_argument("--lr", type=finite_float, help="fine-tuning learning rate (default: the artifact's)")
    ad.add_argument("--batch", type=positive_int, default=100,
                    help="queries read and classified at a time (default 100); with --norm-stats batch a batch "
                         "shares BatchNorm statistics, so a prediction depends on the queries beside it")
    ad.add_argument(
        "--norm-stats",
        choices=("batch", "support"),
        help="BatchNorm statistics: of each batch, or of the support set, frozen (as the C export does)",
    )
    ad.add_argument("--views", type=int, choices=VIEWS,
                    help="test-time views: adapt and score each rotation (4) or rotation and mirror (8) of the "
                         "task, averaging the scores; more accurate on glyphs, that many times the work "
                         "(default: the artifact's, 1)")
    ad.add_argument("--raw-out", metavar="DIR", help="also write support.bin/query.bin for the C example program")
    add_common(ad, threads=True)
    ad.set_defaults(handler=run_adapt)

    models = sub.add_parser("models", help="the trained, compressed models shipped with fewbit")
    add_common(models)
    models.set_defaults(handler=run_models)


def model_source(given: str | None, name: str | None, what: str) -> str:
    """The artifact a command works on: a path given, or a shipped model's; exactly one of them."""

    if (given is None) == (name is None):
        raise ConfigError(f"{what}: give a .fewbit file or --model NAME (one of them)")
    return str(model_path(name)) if name is not None else str(given)


def run_models(args: argparse.Namespace) -> Output:

    cards = model_cards()
    rows = [[c["name"], f"{c['bytes']:,}", f"{100 * c['accuracy']:.2f} +- {100 * c['ci95']:.2f}",
             f"{c['ways']}-way {c['shots']}-shot", c["data"]["name"].split(" (")[0], c["algorithm"], _compression(c)]
            for c in cards]
    text = table(["name", "bytes", "accuracy %", "task", "data", "algorithm", "compression"], rows)
    text += "\nuse one: fewbit adapt --model NAME --support DIR --query DIR"
    return Output({"models": cards}, text)


def _compression(card: dict[str, Any]) -> str:
    """A card's compression for the table: its spec, or for a searched per-layer plan (a long spec
    string, in `--json`) what it was searched for."""
    if "plan" in card and "search" in card:
        return f"per-layer plan searched for {card['search']['budget']:,} B (plan: --json)"
    return str(card["compress"])


def byte_size(text: str) -> int:
    """argparse type: bytes, with an optional K or M suffix (KiB, MiB): 256K, 1M, 4096."""
    units = {"K": 1024, "M": 1024 * 1024}
    number, unit = (text[:-1], units[text[-1].upper()]) if text and text[-1].upper() in units else (text, 1)
    try:
        value = int(number) * unit
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected bytes like 256K or 1M, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return value


def _export_artifact_onnx(args: argparse.Namespace) -> Output:
    """An artifact (a shipped model or a .fewbit file) as an ONNX graph: the same manifest and tensors."""

    if not args.out:
        raise ConfigError("export: give --out FILE.onnx for an artifact")
    check_not_run_file(args.out, "--out")
    artifact = read_artifact(args.run_dir)
    nbytes = write_onnx(args.out, artifact.manifest, artifact.tensors)
    data = {"path": str(args.out), "format": "onnx", "bytes": nbytes, "source_bytes": artifact.nbytes}
    return Output(data, f"wrote {args.out}: {nbytes:,} bytes (ONNX of {args.run_dir}, {artifact.nbytes:,} bytes)")


def _export_c(args: argparse.Namespace) -> Output:

    source: str | bytes
    if Path(args.run_dir).is_file():
        source = args.run_dir
        default = Path(args.run_dir).with_suffix("").with_name(Path(args.run_dir).stem + "_c")
    else:
        source = _artifact_bytes(args)
        default = Path(args.run_dir) / "model_c"
    out = Path(args.out) if args.out else default
    task = None
    if args.mcu:  # a task of the user's: read before any work, as `fewbit adapt` reads it

        mcu.require_tools()
        task = mcu.folder_task(rt.load(source), args.mcu)
    report = export_c(
        source,
        out,
        max_ways=args.max_ways,
        max_support=args.max_support,
        target=CTarget(ram_bytes=args.ram, flash_bytes=args.flash),
        force=args.force,
        task=task,
        mcu=args.mcu is not None,
    )
    return Output(report, report_text(report))


def _exportable_run(args: argparse.Namespace) -> Any:
    """The run to export, checked: a classifier, and a `--scope` the runtime follows."""

    if args.scope is not None:

        try:
            scope_parts(args.scope)  # what the runtime will accept from the artifact
        except ValueError as exc:
            raise ConfigError(f"--scope: {exc}") from None
    run = load_run(args.run_dir, checkpoint=args.checkpoint, device="cpu")
    if run.config.regression:
        raise ConfigError(f"export: {args.run_dir} is a regression run; artifacts hold classifiers")
    run.test_time(algorithm=getattr(args, "test_algorithm", None))
    return run


def _export_args(run: Any, args: argparse.Namespace) -> dict[str, Any]:
    """What `export`/`artifact_from_model` take for a run: the algorithm decides how the runtime adapts."""
    return {**run.export_args(), "adaptation_scope": args.scope}


def _artifact_bytes(args: argparse.Namespace) -> bytes:
    """A run's artifact, in memory (what `fewbit export RUN` would write)."""

    run = _exportable_run(args)
    manifest, tensors = artifact_from_model(run.model, **_export_args(run, args))
    return encode_artifact(manifest, tensors)


def run_export(args: argparse.Namespace) -> Output:

    args.run_dir = model_source(args.run_dir, args.model, "export")
    if args.format == "onnx":

        require_onnx()  # before any work: an optional extra
    if args.format == "c":
        return _export_c(args)
    if Path(args.run_dir).is_file():
        if args.format == "onnx":
            return _export_artifact_onnx(args)
        raise ConfigError(f"export: {args.run_dir} is already an artifact; export it to --format onnx or c")
    out = Path(args.out) if args.out else Path(args.run_dir) / f"model.{args.format}"
    check_not_run_file(out, "--out")  # before any work: never over a run's checkpoints, config or metrics
    run = _exportable_run(args)
    info = export(run.model, out, format=args.format, **_export_args(run, args))
    f32 = info["float32_bytes"]
    text = f"wrote {out}: {info['bytes']:,} bytes ({versus_float32(info['ratio'])} {f32:,})"
    return Output(info, text)


@dataclasses.dataclass(frozen=True)
class _Task:
    """What `fewbit adapt` works on: the support set (read), and the queries listed by name, read a
    batch at a time by `queries(start, stop)` (float32 `[n, ...]` as the model takes them)."""

    support: Any  # an ImageFolder: x, labels, classes, files
    names: list[str]
    truth: list[str | None]
    queries: Callable[[int, int], np.ndarray]


def _query_listing(path: Path) -> tuple[list[str], list[str | None]]:
    """(files, true class names or None) of a query folder of class folders or of image files,
    listed without reading an image."""

    if not path.is_dir():
        raise DataError(f"query folder {path} does not exist")
    entries = itertools.islice(path.iterdir(), images.MAX_FOLDER_FILES + 1)  # more: refused by the listing
    if any(p.is_dir() and not is_skipped_entry(p.name) for p in entries):
        folder = list_image_folder(path, what="query")
        return list(folder.files), [folder.classes[i] for i in folder.labels]
    files, _ = list_images(path)
    if not files:
        raise DataError(f"query folder {path} has no class folders and no images")
    return [str(p) for p in files], [None] * len(files)


def _adapt_task(model: Any, args: argparse.Namespace, options: dict[str, Any], source: str) -> _Task:
    """The support set and the queries of `fewbit adapt`, the size of the work checked before
    any image is read: the support set against the adaptation limits, a query batch against the
    memory limit. Queries are read `--batch` at a time, never all at once. A warning says when the
    images are not what the model was trained on (colour for a greyscale model, a size far off)."""

    pre = model.prep
    if isinstance(pre, SeriesPreprocessing):
        return _series_task(model, args, options, pre)
    if isinstance(pre, TablePreprocessing):
        for name in ("support", "query"):
            path = Path(getattr(args, name))
            if not path.is_file():
                raise DataError(f"--{name} {path}: this is a table model; give a CSV file of its columns")
        table = read_table(args.support, label_column=pre.label_column, features=pre.features)
        classes = tuple(sorted(set(table.labels)))
        index = {c: i for i, c in enumerate(classes)}
        labels = np.array([index[v] for v in table.labels], np.int64)
        support = ImageFolder(pre.standardize(table.values), labels, classes,
                              tuple(f"row {i + 1}" for i in range(len(labels))))
        _check_classes(support.classes, args.support)
        query = read_table(args.query, label_column=pre.label_column, features=pre.features, labelled=False)
        query_x = pre.standardize(query.values)
        names = [f"{Path(args.query).name} row {i + 1}" for i in range(len(query.values))]
        truth: list[str | None] = list(query.labels) if query.labels else [None] * len(names)
        return _Task(support, names, truth, lambda start, stop: query_x[start:stop])
    if Path(args.support).is_file():
        raise DataError(f"--support {args.support}: this is an image model; give a folder with one folder per class")
    listing = list_image_folder(args.support, what="support")
    _check_classes(listing.classes, args.support)
    files, truth = _query_listing(Path(args.query))
    name, data = describe_model(source)
    warn_if_unfit([*listing.files, *files], pre, model=name, data=data, what="support and query images")
    try:
        check_support_size(model, len(listing.files), **options)
        limits.check_batch(model.cost, min(args.batch, len(files)), what="a query batch (--batch)")
    except ValueError as exc:
        raise ConfigError(f"adapt: {exc}") from None
    if args.raw_out:
        need = len(files) * math.prod(model.input_shape)
        if need > limits.MAX_BATCH_BYTES:
            raise LimitError(f"adapt: --raw-out: {len(files):,} query images are {need / (1 << 30):.1f} GiB of "
                             f"pixels, more than the limit {limits.MAX_BATCH_BYTES >> 30} GiB; use fewer queries")
    support = ImageFolder(load_images(listing.files, pre), listing.labels, listing.classes, listing.files)
    return _Task(support, files, truth, lambda start, stop: load_images(files[start:stop], pre))


def _series_task(model: Any, args: argparse.Namespace, options: dict[str, Any], pre: SeriesPreprocessing) -> _Task:
    """`fewbit adapt` on series: support and queries as class folders of .csv/.npy samples (queries
    also as a folder of samples), or as labelled files (`.ts`, UCR text, a labelled CSV)."""
    if args.raw_out:
        raise ConfigError("adapt: --raw-out writes images for the C example program; a series model's C example "
                          "reads the task it was exported with (fewbit export --format c --mcu)")
    support_path, query_path = Path(args.support), Path(args.query)
    if support_path.is_file():
        data = read_series_source(support_path)
        classes = data.classes
        index = {c: i for i, c in enumerate(classes)}
        support = ImageFolder(pre.prepare(data.series), np.array([index[v] for v in data.labels], np.int64),
                              classes, tuple(f"{support_path.name} series {i + 1}" for i in range(len(data))))
    else:
        listing = list_image_folder(support_path, what="support", suffixes=SERIES_FILE_SUFFIXES)
        support = ImageFolder(pre.prepare([read_series_file(f) for f in listing.files], names=listing.files),
                              listing.labels, listing.classes, listing.files)
    _check_classes(support.classes, args.support)
    try:
        check_support_size(model, len(support.files), **options)
    except ValueError as exc:
        raise ConfigError(f"adapt: {exc}") from None
    if query_path.is_file():
        data = read_series_source(query_path)
        names = [f"{query_path.name} series {i + 1}" for i in range(len(data))]
        query_x = pre.prepare(data.series)
        return _Task(support, names, list(data.labels), lambda start, stop: query_x[start:stop])
    if not query_path.is_dir():
        raise DataError(f"query {query_path} does not exist")
    entries = itertools.islice(query_path.iterdir(), images.MAX_FOLDER_FILES + 1)
    if any(p.is_dir() and not is_skipped_entry(p.name) for p in entries):
        listing = list_image_folder(query_path, what="query", suffixes=SERIES_FILE_SUFFIXES)
        files, truth = list(listing.files), [listing.classes[i] for i in listing.labels]
    else:
        found, _ = list_images(query_path, suffixes=SERIES_FILE_SUFFIXES)
        files, truth = [str(p) for p in found], [None] * len(found)
    if not files:
        raise DataError(f"query folder {query_path} has no class folders and no series (.csv, .npy)")
    return _Task(support, files, truth,
                 lambda start, stop: pre.prepare([read_series_file(f) for f in files[start:stop]],
                                                 names=files[start:stop]))


def _check_classes(classes: tuple[str, ...], where: str) -> None:
    if len(classes) < 2:
        raise DataError(f"support set {where} has one class ({classes[0]}); a task needs at least two")


def run_adapt(args: argparse.Namespace) -> Output:
    """Adapt to the support set and classify the queries, `--batch` at a time: with batch
    statistics (`--norm-stats batch`) the queries of a batch are embedded together (with the
    support set where the artifact embeds them jointly), as they always were, so a prediction
    depends on its batch; with `--norm-stats support` each query is classified on its own."""

    source = model_source(args.artifact, args.model, "adapt")
    if not Path(source).exists():  # a typo may be long: say so without echoing all of it
        raise DataError(f"{shown(source)}: no such file")
    model = rt.load(source)
    options = {"method": args.method, "steps": args.steps, "lr": args.lr, "norm_stats": args.norm_stats,
               "views": args.views}
    task = _adapt_task(model, args, options, source)
    support, files, truth = task.support, task.names, task.truth
    try:
        adapted = rt.adapt(model, support.x, support.labels, **options)
    except ValueError as exc:
        raise ConfigError(f"adapt: {exc}") from None
    preds, scores, pixels = [], [], []
    for start in range(0, len(files), args.batch):
        query_x = task.queries(start, start + args.batch)
        try:
            p, s = adapted.scores(query_x)
        except ValueError as exc:
            raise ConfigError(f"adapt: {exc}") from None
        preds.append(p)
        scores.append(s)
        if args.raw_out:
            pixels.append(_raw_pixels(query_x, model))
    if args.raw_out:

        write_task_files(args.raw_out, _raw_pixels(support.x, model), support.labels, np.concatenate(pixels),
                         classes=support.classes)
    labels = [support.classes[i] for i in np.concatenate(preds)]
    score = np.concatenate(scores)
    predictions = [
        {"file": f, "label": lab, "score": round(float(s), 6)} for f, lab, s in zip(files, labels, score)
    ]
    labelled = all(t is not None and t in support.classes for t in truth)
    accuracy = float(np.mean([lab == t for lab, t in zip(labels, truth)])) if labelled else None
    data: dict[str, Any] = {
        "predictions": predictions,
        "accuracy": accuracy,
        "classes": list(support.classes),
        "method": adapted.method,
        "norm_stats": adapted.settings["norm_stats"],
        "views": adapted.settings["views"],
        "support_images": len(support.files),
        "query_images": len(files),
    }
    rows = [
        [shown(Path(f).name if t is None or model.prep.kind == "table" else f"{t}/{Path(f).name}", None), lab,
         f"{s:.3f}"]
        for f, lab, s, t in zip(files, labels, score, truth)
    ]
    text = table(["file", "label", "score"], rows)
    if accuracy is not None:
        correct = sum(lab == t for lab, t in zip(labels, truth))
        ways = len(support.classes)
        text += f"\naccuracy: {100 * accuracy:.1f}% ({correct}/{len(files)}), {ways}-way, {adapted.method}"
    elif any(t is not None for t in truth):
        text += "\naccuracy: n/a (query folders are not all named like support classes)"
    return Output(data, text)


def _raw_pixels(x: np.ndarray, model: Any) -> np.ndarray:
    """`x` as the C example program's uint8 pixels (`--raw-out`)."""

    try:
        return input_to_pixels(x, model.preprocessing)
    except ValueError as exc:
        raise DataError(f"adapt: --raw-out: {exc}") from None
