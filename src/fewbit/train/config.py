"""TrainConfig: everything a meta-training run needs, frozen, validated, round-tripping through YAML."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from fewbit.compress.spec import load_spec
from fewbit.config import brief, check, from_dict, load_yaml, setting, to_dict
from fewbit.data.augment import AUGMENTS
from fewbit.data.registry import option_defaults, parse_spec, spec_help
from fewbit.data.sources import JOINED_SPLIT
from fewbit.errors import ConfigError, DataError
from fewbit.evaluation import MAX_EVAL_EXAMPLES, check_task_count
from fewbit.meta.base import MetaConfig, full_config, setting_defaults
from fewbit.models import BACKBONES

SCHEDULES = ("constant", "cosine")
TRAIN_ON = ("train", JOINED_SPLIT)  # the split(s) whose classes a run trains on
OWNER = "TrainConfig"
# Documented limits (docs/bad-input.md): work and memory are bounded before anything is built.
MAX_TASK_IMAGES = 10_000  # ways * (shots + queries): the examples of one task
MAX_STEP_IMAGES = MAX_EVAL_EXAMPLES  # 100,000: meta_batch * ways * (shots + queries), or batch_size: one outer step
SEED_RANGE = (-(1 << 63), (1 << 64) - 1)  # what torch.manual_seed takes
# `steps: auto`: train at most AUTO_STEPS steps, and stop once AUTO_PATIENCE validations in a row have
# not beaten the best (the best checkpoint is what eval and export use). On generated photos
# (benchmarks/own_photos.py) validation was still rising at 1,400 steps and stopped at 1,900.
AUTO_STEPS = 2000
AUTO_PATIENCE = 5
# Settings whose default depends on the data: these for built-in data; a kind of data may set its own
# (`train_defaults` of its registration: a user's own images train with augmentation, small steps
# and until validation stops rising). A config holds the resolved values.
BUILT_IN_DEFAULTS: dict[str, Any] = {"steps": 1000, "augment": "none", "meta_batch": 16, "queries": 15}


def steps_value(text: str) -> int | str:
    """argparse type of --steps: a whole number, or `auto`."""
    return "auto" if text == "auto" else int(text) if text.lstrip("-").isdigit() else text


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """One meta-training run: data, model, task shape, outer loop, validation, checkpoints.

    `meta` is the algorithm's config (`fewbit.meta.MetaConfig`, or the algorithm's own subclass:
    algorithm, inner steps, inner lr, ...); `data` is the reading options of the `dataset`'s kind
    (`fewbit.data.ImageOptions` for `folder:`, `TableOptions` for `csv:`, ...; None: its
    defaults). In YAML both are nested mappings; their fields may also be given at the top level
    (`algorithm: maml`, `image_size: 84`), which is what the command-line flags do, and which is
    the flat form of configs written before the options were nested.
    """

    dataset: str = setting("", lambda: f"the data: {spec_help()}", metavar="SPEC")
    backbone: str = setting("auto", "the backbone (auto: the data kind's default: conv4 for images, conv1d for "
                            "series, mlp for tables and regression)", choices=lambda: ("auto", *BACKBONES))
    ways: int = setting(5, "classes per task")
    shots: int = setting(1, "labelled examples per class in a task's support set")
    queries: int = setting(None, "examples per class a task is scored on (default: 5 for your own images, "
                           "15 otherwise)")
    meta_batch: int = setting(None, "tasks per outer step, split across ranks when distributed (default: 4 for "
                              "your own images, 16 otherwise)")
    steps: int = setting(None, f"outer steps, or auto: at most {AUTO_STEPS:,}, stopping once --patience validations "
                         "in a row have not beaten the best (the best checkpoint is kept); default: auto for your own "
                         f"images (folder:, csvsplit:), {BUILT_IN_DEFAULTS['steps']} otherwise", metavar="N|auto",
                         parse=steps_value)
    patience: int = setting(None, "stop once N validations in a row have not beaten the best, keeping the best "
                            f"checkpoint (0: never); default: {AUTO_PATIENCE} with --steps auto, else 0", metavar="N")
    outer_lr: float = setting(1e-3, "Adam's learning rate")
    schedule: str = setting("cosine", "outer learning rate: cosine decay to 0 at the last step, or constant",
                            choices=lambda: SCHEDULES)
    grad_clip: float | None = setting(None, "max global norm of the outer gradient (default: no clipping)")
    seed: int = setting(0, "seed of the model's initialisation and of the training tasks")
    meta: MetaConfig = setting(default_factory=MetaConfig, flag=False)
    data: Any = setting(None, "the dataset kind's reading options (None: its defaults)", flag=False)
    batch_size: int = setting(64, "examples per step for non-episodic algorithms (finetune)")
    rotations: bool = setting(False, "count 90-degree rotations as new classes (training tasks only)")
    augment: str = setting(None, "seeded augmentation of training tasks: auto = photo (crop, flip, colour jitter) "
                           "for colour data, glyph (small affine) for greyscale; ink = glyph plus elastic "
                           "distortion and thicker strokes (handwriting); default: auto for your own images "
                           "(folder:, csvsplit:), none otherwise", choices=lambda: AUGMENTS)
    within_group: bool = setting(False, "draw each training task's classes from one group (alphabet)")
    train_on: str = setting("train", "train on the training classes, or on the validation classes too for a "
                            "final model once validation has chosen the recipe (needs --val-every 0)",
                            choices=lambda: TRAIN_ON)
    val_every: int = setting(100, "validate on the val split every N steps (0: never; the last step is kept)")
    val_tasks: int = setting(100, "tasks per validation")
    checkpoint_every: int = setting(50, "write a resumable checkpoint every N steps (and at the end)")
    keep_checkpoints: int = setting(2, "resumable checkpoints kept (the older ones are the fallback for a "
                                    "torn newest)")
    device: str = setting("auto", "auto | cpu | cuda", flag=False)
    compress: str | None = setting(None, "compress the model before meta-training (a compression spec; none: "
                                   "float32, e.g. over a config file's spec)", metavar="SPEC")
    init_from: str | None = setting(None, "start from a run's weights (those that fit), e.g. a classifier "
                                    "pre-trained with --algorithm simpleshot before --algorithm metabaseline; "
                                    "--compress then prunes and quantizes those weights (a run of the same "
                                    "compression gives its masks and steps too)", metavar="RUN_DIR")
    teacher: str | None = setting(None, "distil a finished supervised run into this one (born-again: train the "
                                  "recipe again with the first run as --teacher)", metavar="RUN_DIR")
    teacher_weight: float = setting(0.5, "the distillation loss's share of the loss, in (0, 1]")
    teacher_temperature: float = setting(4.0, "softens both distributions (Hinton et al. 2015)")

    def __post_init__(self) -> None:
        check(isinstance(self.dataset, str) and bool(self.dataset), OWNER, "dataset",
              "required: give a data spec (--dataset SPEC), e.g. sinusoid or omniglot-minimal:DIR")
        try:
            source = parse_spec(self.dataset)
        except DataError as exc:
            raise ConfigError(f"{OWNER}.dataset: {exc}") from None
        self._resolve_defaults(dict(source.source.train_defaults))
        check(self.backbone in ("auto", *BACKBONES), OWNER, "backbone",
              f"unknown backbone {brief(self.backbone)}; choose one of auto, {', '.join(BACKBONES)}")
        for name, low in (("ways", 1), ("shots", 1), ("queries", 1), ("meta_batch", 1), ("steps", 0),
                          ("batch_size", 1), ("val_every", 0),
                          ("checkpoint_every", 0), ("keep_checkpoints", 1)):
            value = getattr(self, name)
            check(isinstance(value, int) and not isinstance(value, bool) and value >= low, OWNER, name,
                  f"must be an integer >= {low}, got {brief(value)}")
        check_task_count(self.val_tasks, f"{OWNER}.val_tasks", ConfigError)
        check_seed(OWNER, "seed", self.seed)
        check_task_shape(OWNER, ways=1 if self.regression else self.ways, shots=self.shots, queries=self.queries,
                         tasks=self.meta_batch)
        check(self.batch_size <= MAX_STEP_IMAGES, OWNER, "batch_size",
              f"must be at most {MAX_STEP_IMAGES} images, got {self.batch_size}")
        check(_positive_float(self.outer_lr), OWNER, "outer_lr", f"must be a number > 0, got {brief(self.outer_lr)}")
        check(self.grad_clip is None or _positive_float(self.grad_clip), OWNER, "grad_clip",
              f"must be a number > 0 or null, got {brief(self.grad_clip)}")
        check(self.schedule in SCHEDULES, OWNER, "schedule",
              f"must be one of {', '.join(SCHEDULES)}, got {brief(self.schedule)}")
        check(isinstance(self.rotations, bool), OWNER, "rotations",
              f"must be true or false, got {brief(self.rotations)}")
        check(isinstance(self.device, str), OWNER, "device", f"must be auto, cpu or cuda, got {brief(self.device)}")
        check(self.init_from is None or (isinstance(self.init_from, str) and bool(self.init_from)), OWNER,
              "init_from", f"must be a run directory or null, got {self.init_from!r}")
        check(self.teacher is None or (isinstance(self.teacher, str) and bool(self.teacher)), OWNER,
              "teacher", f"must be a run directory or null, got {self.teacher!r}")
        check(_positive_float(self.teacher_weight) and self.teacher_weight <= 1, OWNER, "teacher_weight",
              f"must be a number in (0, 1], got {brief(self.teacher_weight)}")
        check(_positive_float(self.teacher_temperature), OWNER, "teacher_temperature",
              f"must be a number > 0, got {brief(self.teacher_temperature)}")
        if isinstance(self.compress, str) and self.compress.strip().lower() == "none":
            object.__setattr__(self, "compress", None)  # `--compress none` turns a config file's spec off
        check(self.compress is None or (isinstance(self.compress, str) and bool(self.compress)), OWNER, "compress",
              f"must be a compression spec string or null, got {brief(self.compress)}")
        if self.compress is not None:  # parsed now, not when the model is built: a typo costs nothing
            try:
                load_spec(self.compress)
            except ConfigError as exc:
                raise ConfigError(f"{OWNER}.compress: {exc}") from None
        check(isinstance(self.meta, MetaConfig), OWNER, "meta",
              f"must be a fewbit.meta.MetaConfig, got {type(self.meta).__name__}")
        object.__setattr__(self, "meta", full_config(self.meta))  # the algorithm's own settings, defaults filled
        check(self.augment in AUGMENTS, OWNER, "augment",
              f"must be one of {', '.join(AUGMENTS)}, got {self.augment!r}")
        check(isinstance(self.within_group, bool), OWNER, "within_group",
              f"must be true or false, got {self.within_group!r}")
        check(self.train_on in TRAIN_ON, OWNER, "train_on",
              f"must be one of {', '.join(TRAIN_ON)}, got {brief(self.train_on)}")
        check(self.train_on == "train" or self.val_every == 0, OWNER, "train_on",
              "train+val leaves no unseen classes to validate on; set val_every: 0 (--val-every 0)")
        data = source.source.options() if self.data is None else self.data
        check(type(data) is source.source.options, OWNER, "data",
              f"{source.token} data reads with {source.source.options.__name__}, got {type(data).__name__}")
        object.__setattr__(self, "data", data)

    def _resolve_defaults(self, kind_defaults: dict[str, Any]) -> None:
        """Settings left unset (None) take the data kind's default, then fewbit's; `steps: auto`
        becomes AUTO_STEPS with AUTO_PATIENCE unless patience is given. The config then holds
        plain values: a run's config.yaml says exactly what it trained with."""
        resolved = {name: kind_defaults.get(name, default) if getattr(self, name) is None else getattr(self, name)
                    for name, default in BUILT_IN_DEFAULTS.items()}
        steps = resolved["steps"]
        patience = self.patience
        if steps == "auto":
            steps = AUTO_STEPS
            patience = AUTO_PATIENCE if patience is None else patience
        check(isinstance(steps, int) and not isinstance(steps, bool), OWNER, "steps",
              f"must be an integer >= 0 or auto, got {brief(steps)}")
        patience = 0 if patience is None else patience
        check(isinstance(patience, int) and not isinstance(patience, bool) and patience >= 0, OWNER, "patience",
              f"must be an integer >= 0, got {brief(patience)}")
        if patience and isinstance(self.val_every, int) and self.val_every <= 0:
            given = "steps" if self.steps == "auto" or self.patience is None else "patience"
            raise ConfigError(f"{OWNER}.{given}: stopping when validation stops improving needs validation "
                              f"(val_every: 0 here); give a number of steps (--steps N) or --val-every N")
        resolved.update(steps=steps, patience=patience)
        for name, value in resolved.items():
            object.__setattr__(self, name, value)

    @property
    def algorithm(self) -> str:
        """The algorithm's name (`meta.algorithm`)."""
        return str(self.meta.algorithm)

    @property
    def data_kind(self) -> str:
        """What the data spec's kind holds: images, table, series or regression."""
        return parse_spec(self.dataset).kind

    @property
    def regression(self) -> bool:
        """Whether the data spec names a regression family (sinusoid)."""
        return self.data_kind == "regression"

    @property
    def table(self) -> bool:
        """Whether the data spec names a table (`csv:PATH`)."""
        return self.data_kind == "table"

    @property
    def resolved_backbone(self) -> str:
        """The backbone name with `auto` resolved (the default backbone of the data's kind)."""
        if self.backbone != "auto":
            return self.backbone
        return parse_spec(self.dataset).source.backbone

    def to_dict(self) -> dict[str, Any]:
        """A plain, YAML-ready dict (with `version`); `meta` nested."""
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a dict; the algorithm's and the data's fields may sit at the top level or
        under `meta` and `data`."""
        return from_dict(cls, _fold_data(_fold_meta(data)))

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with `changes` applied (MetaConfig field names go to `meta`); validated again."""
        data = self.to_dict()
        data.update(changes)
        return TrainConfig.from_dict(data)


def check_seed(owner: str, field: str, value: Any) -> None:
    """ConfigError unless `value` is an integer seed torch accepts."""
    low, high = SEED_RANGE
    check(isinstance(value, int) and not isinstance(value, bool) and low <= value <= high, owner, field,
          f"must be an integer in [-2**63, 2**64 - 1], got {brief(value)}")


def check_task_shape(owner: str, *, ways: int, shots: int, queries: int, tasks: int) -> None:
    """ConfigError when one task, or `tasks` of them drawn at once, would hold more examples than the limits.

    Checked before any data is read or model built: a typo such as `--ways 20000000` must cost nothing.
    """
    per_task = ways * (shots + queries)
    check(per_task <= MAX_TASK_IMAGES, owner, "ways",
          f"{ways}-way tasks of {shots} shots + {queries} queries hold {per_task} examples, more than the "
          f"{MAX_TASK_IMAGES} a task may have; lower --ways, --shots or --queries")
    check(per_task * tasks <= MAX_STEP_IMAGES, owner, "meta_batch",
          f"{tasks} tasks of {per_task} examples are {per_task * tasks} examples at once, more than "
          f"{MAX_STEP_IMAGES}; lower --meta-batch")


def _positive_float(value: Any) -> bool:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return 0 < float(value) < math.inf
    except OverflowError:  # an int too large for a float
        return False


def _fold_meta(data: dict[str, Any]) -> dict[str, Any]:
    """`data` with top-level MetaConfig fields moved into `meta`, and `meta` built into a MetaConfig."""
    if not isinstance(data, dict):
        raise ConfigError(f"{OWNER}: expected a mapping, got {type(data).__name__}")
    data = dict(data)
    own = {f.name for f in dataclasses.fields(TrainConfig)}
    meta_fields = set(setting_defaults()) - own
    raw = data.pop("meta", None)
    if raw is None:
        meta_data: dict[str, Any] = {}
    elif isinstance(raw, MetaConfig):
        meta_data = to_dict(raw)
    elif isinstance(raw, dict):
        meta_data = dict(raw)
    else:
        raise ConfigError(f"{OWNER}.meta: must be a mapping of MetaConfig fields, got {type(raw).__name__}")
    for key in sorted(meta_fields & set(data)):
        meta_data[key] = data.pop(key)
    data["meta"] = MetaConfig.from_dict(meta_data)
    return data


def _fold_data(data: dict[str, Any]) -> dict[str, Any]:
    """`data` with top-level reading options moved into `data`, and `data` built into the options
    of the dataset's kind. An option the kind has not is dropped when it holds its default (a config
    of the old flat form wrote every option for every kind) and refused otherwise."""
    data = dict(data)
    raw = data.pop("data", None)
    if raw is None:
        options: dict[str, Any] = {}
    elif dataclasses.is_dataclass(raw) and not isinstance(raw, type):
        options = {f.name: getattr(raw, f.name) for f in dataclasses.fields(raw)}
    elif isinstance(raw, dict):
        options = dict(raw)
    else:
        raise ConfigError(f"{OWNER}.data: must be a mapping of reading options, got {type(raw).__name__}")
    defaults = option_defaults()
    for key in sorted(set(defaults) & set(data)):
        options[key] = data.pop(key)
    spec = data.get("dataset")
    if not isinstance(spec, str) or not spec:
        return data  # the missing dataset is reported by TrainConfig itself
    try:
        source = parse_spec(spec)
    except DataError as exc:
        raise ConfigError(f"{OWNER}.dataset: {exc}") from None
    own = {f.name for f in dataclasses.fields(source.source.options)}
    options.pop("version", None)
    for key in sorted(set(options) - own):
        if key in defaults and _same(options[key], defaults[key][0]):
            del options[key]  # another kind's option at its default: it never mattered here
        else:
            kinds = ", ".join(defaults[key][1]) if key in defaults else "no kind of data"
            raise ConfigError(f"{OWNER}.data.{key}: {source.token} data has no option {key} (an option of {kinds}); "
                              "remove it")
    try:
        data["data"] = from_dict(source.source.options, options)
    except ConfigError as exc:
        raise ConfigError(f"{OWNER}.data: {exc}") from None
    return data


def _same(value: Any, default: Any) -> bool:
    if isinstance(value, (list, tuple)) and isinstance(default, (list, tuple)):
        return list(value) == list(default)
    return bool(value == default)


def load_config(path: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """The TrainConfig of YAML file `path` (optional) with `overrides` (None values ignored) on top."""
    data: dict[str, Any] = load_yaml(path) if path is not None else {}
    data.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig.from_dict(data)
