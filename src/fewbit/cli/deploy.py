"""`fewbit export RUN_DIR --out model.fewbit [--format fewbit|onnx]` and
`fewbit adapt model.fewbit --support DIR --query DIR [--json]` (the torch-free runtime).

`inspect` of a `.fewbit` file lives with `fewbit inspect` (`fewbit.deploy.inspect_artifact`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from fewbit.cli.common import Output, add_common, finite_float, nonnegative_int, positive_int, table
from fewbit.errors import ConfigError, DataError


def register(sub: argparse._SubParsersAction) -> None:
    exp = sub.add_parser("export", help="write a run's model as a .fewbit artifact (or ONNX)")
    exp.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (fewbit train)")
    exp.add_argument("--out", help="file to write (default RUN_DIR/model.fewbit or model.onnx)")
    exp.add_argument("--format", default="fewbit", choices=("fewbit", "onnx"))
    exp.add_argument("--checkpoint", default="best", choices=("best", "last"))
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
    ad.add_argument("artifact", metavar="MODEL", help="a .fewbit artifact")
    ad.add_argument("--support", required=True, metavar="DIR", help="one folder of images per class")
    ad.add_argument(
        "--query",
        required=True,
        metavar="DIR",
        help="images to classify: class folders (named as in --support for an accuracy) or files",
    )
    ad.add_argument("--method", choices=("protonet", "finetune"), help="default: the artifact's")
    ad.add_argument("--steps", type=nonnegative_int, help="fine-tuning SGD steps (default: the artifact's)")
    ad.add_argument("--lr", type=finite_float, help="fine-tuning learning rate (default: the artifact's)")
    ad.add_argument("--batch", type=positive_int, default=100, help="queries per forward batch (default 100)")
    add_common(ad, threads=True)
    ad.set_defaults(handler=run_adapt)


def run_export(args: argparse.Namespace) -> Output:
    from fewbit.deploy import export
    from fewbit.train import load_run
    from fewbit.train.run import check_not_run_file

    out = Path(args.out) if args.out else Path(args.run_dir) / f"model.{args.format}"
    check_not_run_file(out, "--out")  # before any work: never over a run's checkpoints, config or metrics
    if args.scope is not None:
        from fewbit.runtime.adapt import scope_parts

        try:
            scope_parts(args.scope)  # what the runtime will accept from the artifact
        except ValueError as exc:
            raise ConfigError(f"--scope: {exc}") from None
    run = load_run(args.run_dir, checkpoint=args.checkpoint, device="cpu")
    config = run.config
    if getattr(config, "regression", False):
        raise ConfigError(f"export: {args.run_dir} is a regression run; artifacts hold image classifiers")
    info = export(
        run.model,
        out,
        algorithm=config.algorithm,
        meta=config.meta,
        format=args.format,
        preprocessing={"image_size": int(config.image_size)},
        adaptation_scope=args.scope,
        # what the weights came from, never where: a shipped artifact carries no user paths, and two
        # runs with equal weights export equal bytes
        extra={"step": run.step, "compress": getattr(config, "compress", None)},
    )
    f32 = info["float32_bytes"]
    text = f"wrote {out}: {info['bytes']:,} bytes ({info['ratio']:.1f}x smaller than float32 {f32:,})"
    return Output(info, text)


def _query_folder(
    path: Path, preprocessing: dict[str, Any]
) -> tuple[np.ndarray, list[str], list[str | None]]:
    """(x, files, true class names or None) of a query folder of class folders or of image files."""
    from fewbit.runtime.images import IMAGE_SUFFIXES, load_image, load_image_folder

    if not path.is_dir():
        raise DataError(f"query folder {path} does not exist")
    if any(p.is_dir() and not p.name.startswith(".") for p in path.iterdir()):
        folder = load_image_folder(path, preprocessing, what="query")
        return folder.x, list(folder.files), [folder.classes[i] for i in folder.labels]
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"query folder {path} has no class folders and no PNG or JPEG images")
    return (
        np.stack([load_image(p, preprocessing) for p in files]),
        [str(p) for p in files],
        [None] * len(files),
    )


def run_adapt(args: argparse.Namespace) -> Output:
    import fewbit.runtime as rt
    from fewbit.runtime.images import load_image_folder

    model = rt.load(args.artifact)
    support = load_image_folder(args.support, model.preprocessing, what="support")
    if len(support.classes) < 2:
        raise DataError(
            f"support folder {args.support} has one class ({support.classes[0]}); a task needs at least two"
        )
    query_x, files, truth = _query_folder(Path(args.query), model.preprocessing)
    try:
        adapted = rt.adapt(model, support.x, support.labels, method=args.method, steps=args.steps, lr=args.lr)
        preds, scores = [], []
        for start in range(0, len(query_x), args.batch):
            p, s = adapted.scores(query_x[start : start + args.batch])
            preds.append(p)
            scores.append(s)
    except ValueError as exc:
        raise ConfigError(f"adapt: {exc}") from None
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
        "support_images": len(support.files),
        "query_images": len(files),
    }
    rows = [
        [Path(f).name if t is None else f"{t}/{Path(f).name}", lab, f"{s:.3f}"]
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
