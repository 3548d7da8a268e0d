"""A run directory and the Run it holds: resolved config, metrics, checkpoints, eval results.

Layout of RUN_DIR:
  config.yaml                 the resolved TrainConfig
  metrics.jsonl               one JSON object per training step and per validation
  checkpoints/best.safetensors    weights with the best validation score (what `load_run` loads)
  checkpoints/step-NNNNNNNN.safetensors   resumable full state; the newest is the last one
  eval.json                   written by `fewbit eval`
  .fewbit.lock                held (flock) by the process training the run
  restarted-<time>/           what `--resume --restart` moved aside before training again from step 0

A run's own files are never written by anything but its training (`check_not_run_file`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from fewbit._io import atomic_write_text, check_replaceable, node_kind, read_regular_file
from fewbit._lock import LOCK_NAME
from fewbit.compress import compress_
from fewbit.config import brief, load_yaml
from fewbit.data.registry import parse_spec
from fewbit.data.sources import ClassDataset, RegressionSource, ink_preprocessing, load_source
from fewbit.device import resolve_device
from fewbit.errors import ConfigError, DataError, FewbitFormatError
from fewbit.evaluation import Predictor
from fewbit.meta import build_algorithm
from fewbit.models import build_backbone
from fewbit.runtime.preprocess import Preprocessing, preprocessing_from_dict
from fewbit.train.checkpoint import (
    BEST_NAME,
    EXTRAS,
    MODEL,
    Checkpoint,
    checkpoint_header,
    latest_checkpoint,
    load_checkpoint,
)
from fewbit.train.config import TrainConfig

CONFIG_NAME = "config.yaml"
METRICS_NAME = "metrics.jsonl"
EVAL_NAME = "eval.json"
CHECKPOINT_DIR = "checkpoints"
RESTARTED_PREFIX = "restarted-"
REGRESSION_HIDDEN = (40, 40)  # the MAML paper's sinusoid network
MAX_MODEL_PARAMS = 1 << 28  # 1 GiB of float32 weights: no few-shot backbone comes near it


@dataclasses.dataclass
class Run:
    """A trained model with its algorithm, extra meta-parameters (e.g. Meta-SGD rates) and config."""

    config: TrainConfig
    model: nn.Module
    algorithm: Any
    extras: dict[str, nn.Parameter]
    run_dir: Path | None = None
    step: int = 0
    best: dict[str, Any] | None = None  # {"step", "metric", "value"} of the best validation
    preprocessing: Preprocessing | None = None  # how its inputs were prepared (None: regression)
    stopped: str | None = None  # why training stopped before `config.steps` (patience), else None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one model input: `(C, H, W)` for images, `(F,)` for tables, `(1,)` for regression."""
        return input_shape_of(self.config, self.preprocessing)

    @property
    def params(self) -> dict[str, torch.Tensor]:
        """The model's parameters by name, as the algorithms take them."""
        return dict(self.model.named_parameters())

    @property
    def device(self) -> torch.device:
        first = next(self.model.parameters(), None)
        return first.device if first is not None else torch.device("cpu")

    def export_args(self) -> dict[str, Any]:
        """What `fewbit.deploy.export` / `artifact_from_model` take for this run besides its model: the
        algorithm (how the runtime adapts), its extras, the input preprocessing, and what the weights
        came from, never where (a shipped artifact carries no user paths; equal weights, equal bytes)."""
        return {
            "algorithm": self.algorithm,
            "extras": self.extras,
            "preprocessing": self.preprocessing.to_dict() if self.preprocessing is not None else None,
            "extra": {"step": self.step, "compress": self.config.compress},
        }

    def test_time(self, **overrides: Any) -> None:
        """Adapt at test time differently than in training: `algorithm` (another head-free algorithm,
        e.g. simpleshot for a classifier pre-trained with finetune), `scope`, `eval_inner_steps`.
        Changes this run in place (its algorithm, and extras for another algorithm); ConfigError
        when the change does not fit the run."""
        overrides = {k: v for k, v in overrides.items() if v is not None}
        if not overrides:
            return
        try:
            test_config = self.algorithm.config.replace(**overrides)
        except ConfigError as exc:
            raise ConfigError(f"--algorithm/--scope/--inner-steps: {exc}") from None
        algorithm = build_algorithm(test_config, model=self.model)
        name = overrides.get("algorithm")
        if name is not None and name != self.config.algorithm:
            if algorithm.uses_trained_head:
                raise ConfigError(f"--algorithm: {name} adapts the run's trained head; only "
                                  f"algorithms without one stand in for another algorithm's run")
            self.extras = algorithm.extra_parameters(self.model)  # its own extras at their initial values
        self.algorithm = algorithm

    def predictor(self) -> Predictor:
        """A function of a batch of tasks giving query predictions, for `fewbit.evaluate.evaluate`."""
        model, algorithm, extras = self.model, self.algorithm, self.extras

        def predict(task: Any) -> torch.Tensor:
            return algorithm.predict(model, dict(model.named_parameters()), task, extras).detach()

        return predict


def model_ways(config: TrainConfig, episodic: bool, train_classes: int | None) -> int:
    """Outputs of the model's head: 1 for regression, all train classes for finetune, else `ways`."""
    if config.regression:
        return 1
    if not episodic:
        if train_classes is None:
            raise ConfigError("TrainConfig.meta: a non-episodic algorithm needs the number of train classes")
        return train_classes
    return config.ways


def input_shape_of(config: TrainConfig, preprocessing: Preprocessing | None) -> tuple[int, ...]:
    """One input's shape from the run's preprocessing (a run from before it was recorded: greyscale)."""
    if config.regression:
        return (1,)
    if preprocessing is not None:
        return tuple(preprocessing.input_shape)
    return tuple(default_preprocessing(config).input_shape)  # type: ignore[union-attr]


def default_preprocessing(config: TrainConfig) -> Preprocessing | None:
    """The preprocessing of a run whose checkpoints predate its recording (ink data, greyscale)."""
    if config.regression:
        return None
    # only image runs predate it: their options have an image size (ink data: greyscale, inverted as drawn)
    return ink_preprocessing(int(getattr(config.data, "image_size", 28)))


def build_model(config: TrainConfig, ways: int, input_shape: tuple[int, ...] | None = None) -> nn.Module:
    """The backbone the config names with a `ways`-output head for inputs of `input_shape` (`(C, H, W)`
    or `(F,)`; None: greyscale `config.image_size` images), compressed when `config.compress` is set.

    Its shapes are first worked out on the meta device (no memory, no compute), so an image too
    small for the backbone or a model too large is a ConfigError before anything is allocated.
    """

    name, args = _backbone_args(config, ways, input_shape)
    check_model_size(config, ways, input_shape)
    model = build_backbone(name, **args)
    if config.compress:
        compress_model_(model, config.compress)
    return model


def _backbone_args(
    config: TrainConfig, ways: int, input_shape: tuple[int, ...] | None = None
) -> tuple[str, dict[str, Any]]:
    name = config.resolved_backbone
    shape = input_shape or input_shape_of(config, None)
    if config.regression:
        if name != "mlp":
            raise ConfigError(f"TrainConfig.backbone: sinusoid regression needs the mlp backbone, got {name!r}")
        return "mlp", {"ways": ways, "in_features": 1, "hidden": REGRESSION_HIDDEN}
    if len(shape) == 1:
        if name != "mlp":
            raise ConfigError(f"TrainConfig.backbone: a table's rows need the mlp backbone, got {name!r}")
        return "mlp", {"ways": ways, "in_features": int(shape[0])}
    return name, {"ways": ways, "input_shape": tuple(int(v) for v in shape)}


def check_model_size(config: TrainConfig, ways: int, input_shape: tuple[int, ...] | None = None) -> int:
    """The parameter count of the model `config` builds with `ways` outputs, found on the meta device;
    ConfigError when it exceeds MAX_MODEL_PARAMS or the backbone cannot take the image size."""
    name, args = _backbone_args(config, ways, input_shape)
    if not isinstance(ways, int) or isinstance(ways, bool) or ways < 0:
        raise ConfigError(f"model ways: must be an integer >= 0, got {ways!r}")
    skeleton = meta_skeleton(name, args)
    shape = args.get("input_shape")
    if skeleton is None:
        if shape is None or len(shape) != 3 or shape[1] != shape[2]:
            raise ConfigError(f"model: the {name} backbone does not fit its inputs "
                              f"{list(shape) if shape else args.get('in_features')}")
        size = shape[1]
        fits = next((s for s in range(size + 1, 4 * size + 1)
                     if meta_skeleton(name, {**args, "input_shape": (shape[0], s, s)})), None)
        hint = f"use --image-size {fits} or more" if fits else "use a larger --image-size"
        raise ConfigError(
            f"TrainConfig.image_size: {size}x{size} images are too small for the {name} backbone "
            f"(its pooling shrinks them to nothing); {hint}"
        )
    params = sum(p.numel() for p in skeleton.parameters())
    if params > MAX_MODEL_PARAMS:
        raise ConfigError(
            f"model: a {name} with {ways} outputs for inputs {list(shape) if shape else '-'} has {params:,} "
            f"parameters, more than the {MAX_MODEL_PARAMS:,} fewbit builds"
        )
    return params


def meta_skeleton(name: str, args: dict[str, Any]) -> nn.Module | None:
    """The backbone built on the meta device (shapes only), or None when its layers do not fit the input."""

    try:
        with torch.device("meta"):
            model = build_backbone(name, **args)
            if "input_shape" in args:
                example = torch.zeros(2, *args["input_shape"])
            elif args.get("image_size"):
                example = torch.zeros(2, args.get("in_channels", 1), args["image_size"], args["image_size"])
            else:  # rows of `in_features` values (a table, or regression's one input)
                example = torch.zeros(2, args.get("in_features", 1))
            model(example)  # shapes only: the layers must fit the input (some backbones pool it away)
            return model
    except RuntimeError:  # e.g. "Output size is too small" from a pooling layer
        return None


def compress_model_(model: nn.Module, spec: str) -> None:
    """Apply the compression spec `spec` in place through `fewbit.compress.compress_`."""

    try:
        compress_(model, spec)
    except ConfigError as exc:
        raise ConfigError(f"TrainConfig.compress: {exc}") from None


def eval_dataset(
    spec: str, split: str, config: TrainConfig | None = None, preprocessing: Preprocessing | None = None,
    progress: bool = True,
) -> ClassDataset | None:
    """The split to evaluate on (None for a regression family), read as the run read its data.

    The run's reading options apply when `spec` is of its dataset's kind (its split, its label
    column, ...). With `preprocessing` (the run's or an artifact's), the data are decoded and
    normalised as the model's training data were, so a model evaluated on another source sees
    inputs prepared exactly as in training.
    """
    kind = parse_spec(spec).source.options
    options = config.data if config is not None and type(config.data) is kind else kind()
    if preprocessing is not None:
        options = options.for_preprocessing(preprocessing)
    source = load_source(spec, options=options, progress=progress)
    if isinstance(source, RegressionSource):
        return None
    dataset = source.split(split)
    if preprocessing is not None:
        try:
            dataset = dataset.prepared_as(preprocessing)
        except DataError as exc:
            raise ConfigError(f"{spec}: {exc}") from None
    return dataset




def is_run_dir(path: str | Path) -> bool:
    """Whether `path` looks like a run directory (it has a config.yaml)."""
    return (Path(path) / CONFIG_NAME).is_file()


def check_not_run_file(path: str | Path, flag: str = "--out") -> None:
    """ConfigError when writing `path` would overwrite a file a run directory owns: its config,
    metrics, eval result, lock, or anything under its checkpoints or restarted folders; OutputError
    when `path` exists and is not a regular file (a device or FIFO that a rename would replace)."""

    target = Path(path).resolve()
    owned = {CONFIG_NAME, METRICS_NAME, EVAL_NAME, LOCK_NAME, CHECKPOINT_DIR}
    for run_dir in list(target.parents)[:3]:
        if not is_run_dir(run_dir):
            continue
        first = target.relative_to(run_dir).parts[0]
        if first in owned or first.startswith(RESTARTED_PREFIX):
            raise ConfigError(
                f"{flag}: {path} is part of the run {run_dir} ({first}); write somewhere else"
            )
    check_replaceable(path)


MAX_RUN_TEXT_BYTES = 1 << 30  # a metrics file of millions of steps, with room


def read_run_text(path: str | Path) -> str:
    """A run's text file (metrics), read only when it is a regular file of bounded size; a FIFO or
    device planted in its place is FewbitFormatError, not a read that never ends."""
    try:
        return read_regular_file(path, MAX_RUN_TEXT_BYTES, "run file").decode("utf-8", errors="replace")
    except ValueError as exc:
        raise FewbitFormatError(f"{exc}; move it away and try again") from None


def check_run_files(run_dir: str | Path) -> None:
    """FewbitFormatError when an entry a run keeps is not what fewbit writes there: its config and
    metrics regular files, its checkpoints a folder. A link, FIFO or device planted in their place
    would make a write land outside the run, replace the node, or block; nothing is changed."""

    for name, folder in ((CONFIG_NAME, False), (METRICS_NAME, False), (CHECKPOINT_DIR, True),
                         (f"{CHECKPOINT_DIR}/{BEST_NAME}", False)):
        try:
            mode = os.lstat(Path(run_dir) / name).st_mode
        except FileNotFoundError:
            continue
        if not (stat.S_ISDIR(mode) if folder else stat.S_ISREG(mode)):
            want = "a folder" if folder else "a regular file"
            raise FewbitFormatError(
                f"{Path(run_dir) / name} is {node_kind(mode)}, where a run keeps {want} that fewbit wrote; "
                "move it away and try again"
            )


def read_run_config(run_dir: str | Path) -> TrainConfig:
    """The resolved config of a run directory; anything that is not a run raises one clear error."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        what = "it is not a directory" if run_dir.exists() else "it does not exist"
        raise FewbitFormatError(f"{run_dir} is not a run directory: {what}")
    if not is_run_dir(run_dir):
        raise FewbitFormatError(
            f"{run_dir} is not a run directory: it has no {CONFIG_NAME} (train one with fewbit train)"
        )
    try:
        return TrainConfig.from_dict(load_yaml(run_dir / CONFIG_NAME))
    except ConfigError as exc:
        raise FewbitFormatError(f"{run_dir / CONFIG_NAME} is not a valid run config: {exc}") from None


def train_times(run_dir: str | Path) -> dict[int, float]:
    """Training wall seconds at each step the run recorded (its metrics' training records; a
    torn line, as an interrupted write leaves, is skipped)."""
    path = Path(run_dir) / METRICS_NAME
    if not path.is_file():
        raise FewbitFormatError(f"{run_dir} has no {METRICS_NAME}: it is not a run directory or never trained")
    times = {}
    for line in read_run_text(path).splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("kind") == "train":
            times[int(record["step"])] = float(record["time"])
    return times


def write_run_config(run_dir: Path, config: TrainConfig) -> None:
    """Write `config.yaml` atomically."""

    text = yaml.safe_dump(config.to_dict(), sort_keys=False)
    atomic_write_text(run_dir / CONFIG_NAME, text)


def load_run(
    run_dir: str | Path, *, checkpoint: str = "best", device: str | None = None, model: nn.Module | None = None
) -> Run:
    """The Run in `run_dir`: model rebuilt from its config, weights from the best (or `last`) checkpoint.

    `model` replaces the rebuilt module (for runs trained on a custom module); it is loaded in place.
    """
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    ckpt = _pick_checkpoint(run_dir, checkpoint, checkpoint_bound(config, model))
    step, best = checkpoint_progress(ckpt)
    preprocessing = read_preprocessing(ckpt.state, config, ckpt.path)
    if model is None:
        model = build_model(config, checkpoint_ways(ckpt, config), input_shape_of(config, preprocessing))
    algorithm = build_algorithm(config.meta, model=model)
    target = resolve_device(device or config.device)
    model.to(target)
    _load_module(model, ckpt.group(MODEL), ckpt.path)
    extras = algorithm.extra_parameters(model)
    saved_extras = ckpt.group(EXTRAS)
    with torch.no_grad():
        for name, p in extras.items():
            if name not in saved_extras or saved_extras[name].shape != p.shape:
                raise FewbitFormatError(f"{ckpt.path} lacks the meta-parameter {name!r}; it belongs to another run")
            p.copy_(saved_extras[name])
    return Run(config, model, algorithm, extras, run_dir, step, best, preprocessing)


def read_preprocessing(state: dict[str, Any], config: TrainConfig, where: Path | None) -> Preprocessing | None:
    """The preprocessing a checkpoint records (older checkpoints: the greyscale default)."""
    raw = state.get("preprocessing")
    if raw is None:
        return default_preprocessing(config)
    try:
        return preprocessing_from_dict(raw)
    except ValueError as exc:
        raise FewbitFormatError(f"{where}: its preprocessing record is invalid ({exc})") from None


def checkpoint_ways(ckpt: Checkpoint, config: TrainConfig) -> int:
    """The head size a checkpoint's model was built with, checked against its stored head
    (a state that claims 2e8 classes must not make us allocate them)."""
    ways = ckpt.state.get("model_ways", config.ways)
    if not isinstance(ways, int) or isinstance(ways, bool) or ways < 0:
        raise FewbitFormatError(f"{ckpt.path}: model_ways is {brief(ways)}, not a number of classes")
    head = ckpt.shapes.get(f"{MODEL}/head.weight")
    stored = int(head[0]) if head is not None and len(head) == 2 else 0
    if ways != stored:
        raise FewbitFormatError(f"{ckpt.path}: model_ways says {ways} but the stored head has {stored} outputs")
    return ways


def checkpoint_progress(ckpt: Checkpoint) -> tuple[int, dict[str, Any] | None]:
    """(step, best) of a checkpoint's state, checked: FewbitFormatError when they are malformed."""
    step, best = ckpt.state.get("step", 0), ckpt.state.get("best")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise FewbitFormatError(f"{ckpt.path}: its step is {brief(step)}, not a step number")
    value = best.get("value") if isinstance(best, dict) else None
    if best is not None and not (
        isinstance(best, dict)
        and (value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)))
        and isinstance(best.get("step", 0), int)
    ):
        raise FewbitFormatError(f"{ckpt.path}: its best-score record {brief(best)} is malformed")
    return step, best


def init_weights(model: nn.Module, run_dir: str | Path) -> list[str]:
    """Copy into `model` every tensor of the run in `run_dir` (its best checkpoint) whose name and
    shape fit; returns their names. A classifier pre-trained over many classes starts a meta-learner
    this way (Meta-Baseline): its body fits, its head over the training classes does not.
    ConfigError when nothing fits."""
    ckpt = _pick_checkpoint(Path(run_dir), "best", checkpoint_bound(read_run_config(run_dir))) if is_run_dir(
        run_dir) else None
    if ckpt is None:
        raise ConfigError(f"TrainConfig.init_from: {run_dir} is not a run directory (it has no {CONFIG_NAME})")
    own = model.state_dict()
    saved = ckpt.group(MODEL)
    fits = {n: t for n, t in saved.items() if n in own and own[n].shape == t.shape}
    if not any(n in fits for n, _ in model.named_parameters()):
        raise ConfigError(f"TrainConfig.init_from: no weight of {run_dir} fits this model (another backbone?)")
    with torch.no_grad():
        for name, tensor in fits.items():
            own[name].copy_(tensor)
    return sorted(fits)


def checkpoint_bound(config: TrainConfig, model: nn.Module | None = None) -> Callable[[Checkpoint], int]:
    """From a checkpoint's header, the most tensor elements a checkpoint of this run can hold: its
    model's weights, masks and meta-parameters, Adam's two slots for each, and the RNG states, with
    room. A file declaring more is refused before its data is read (load_checkpoint)."""

    def bound(header: Checkpoint) -> int:
        if model is not None:
            params = sum(p.numel() for p in model.parameters())
        else:
            ways = checkpoint_ways(header, config)
            preprocessing = read_preprocessing(header.state, config, header.path)
            try:
                params = check_model_size(config, ways, input_shape_of(config, preprocessing))
            except ConfigError as exc:
                raise FewbitFormatError(f"{header.path}: {exc}") from None
        return 8 * params + (1 << 20)

    return bound


def _pick_checkpoint(run_dir: Path, which: str, bound: Callable[[Checkpoint], int]) -> Checkpoint:
    directory = run_dir / CHECKPOINT_DIR
    if which not in ("best", "last"):
        raise ConfigError(f"checkpoint: choose best or last, got {which!r}")
    if which == "best":
        best = directory / BEST_NAME
        try:
            header: Checkpoint | None = checkpoint_header(best)
        except FewbitFormatError as exc:
            header = None
            if os.path.lexists(best):
                warnings.warn(f"{exc}; using the newest step checkpoint instead", stacklevel=3)
        if header is not None:
            limit = bound(header)  # a readable file whose state is malformed is an error, not a fallback
            try:
                return load_checkpoint(best, max_elements=limit)
            except FewbitFormatError as exc:
                warnings.warn(f"{exc}; using the newest step checkpoint instead", stacklevel=3)
    ckpt = latest_checkpoint(directory, bound=bound)
    if ckpt is None:
        raise FewbitFormatError(f"{run_dir} is not a finished run: it has no readable checkpoint in {directory}")
    return ckpt


def _load_module(model: nn.Module, tensors: dict[str, torch.Tensor], where: Path | None) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    if missing or unexpected:
        raise FewbitFormatError(
            f"{where} does not fit the model built from its config "
            f"(missing {', '.join(missing[:3]) or '-'}; unexpected {', '.join(unexpected[:3]) or '-'})"
        )
    for name, t in tensors.items():
        if own[name].shape != t.shape:
            raise FewbitFormatError(
                f"{where}: {name} has shape {tuple(t.shape)}, the model wants {tuple(own[name].shape)}"
            )
    model.load_state_dict(tensors)


__all__ = [
    "CHECKPOINT_DIR",
    "RESTARTED_PREFIX",
    "CONFIG_NAME",
    "EVAL_NAME",
    "METRICS_NAME",
    "Run",
    "build_model",
    "check_not_run_file",
    "eval_dataset",
    "load_run",
    "model_ways",
    "read_run_config",
    "train_times",
]
