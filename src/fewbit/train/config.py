"""TrainConfig: everything a meta-training run needs, frozen, validated, round-tripping through YAML."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from fewbit.config import brief, check, from_dict, load_yaml, to_dict
from fewbit.data.sources import JOINED_SPLIT
from fewbit.errors import ConfigError
from fewbit.meta.base import MetaConfig, full_config, setting_defaults

SCHEDULES = ("constant", "cosine")
TRAIN_ON = ("train", JOINED_SPLIT)  # the split(s) whose classes a run trains on
OWNER = "TrainConfig"
# Documented limits (docs/bad-input.md): work and memory are bounded before anything is built.
MAX_IMAGE_SIZE = 512  # pixels per side; Omniglot is drawn at 105
MAX_TASK_IMAGES = 10_000  # ways * (shots + queries): the examples of one task
MAX_STEP_IMAGES = 100_000  # meta_batch * ways * (shots + queries), or batch_size: one outer step
SEED_RANGE = (-(1 << 63), (1 << 64) - 1)  # what torch.manual_seed takes


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """One meta-training run: data, model, task shape, outer loop, validation, checkpoints.

    `meta` is the algorithm's `fewbit.meta.MetaConfig` (algorithm, inner steps, inner lr, ...).
    In YAML it is a nested mapping; its fields may also be given at the top level
    (`algorithm: maml`), which is what the command-line flags do.
    """

    dataset: str = ""  # a data spec: glyphs | sinusoid | omniglot:PATH | omniglot-minimal:DIR | folder:PATH | ...
    backbone: str = "auto"  # mlp | conv4 | resnet12 | auto (mlp for regression and tables, conv4 for images)
    ways: int = 5
    shots: int = 1
    queries: int = 15
    meta_batch: int = 16  # tasks per outer step (split across ranks when distributed)
    steps: int = 1000  # outer steps
    outer_lr: float = 1e-3  # Adam
    schedule: str = "cosine"  # cosine (decays the outer lr to 0 at `steps`: MAML++, Meta-Baseline) | constant
    grad_clip: float | None = None  # max global norm of the outer gradient; None: no clipping
    seed: int = 0
    meta: MetaConfig = dataclasses.field(default_factory=MetaConfig)
    batch_size: int = 64  # images per step for non-episodic algorithms (finetune)
    rotations: bool = False  # 90-degree rotations count as new classes (training tasks only)
    image_size: int = 28  # images are resized to image_size x image_size
    channels: int | None = None  # 1 | 3 | null: detect (RGB when any image holds colour)
    invert: bool = False  # invert image files (dark strokes on light paper read through folder:)
    normalize: bool = True  # folder/csvsplit data: standardise channels with the training split's statistics
    resize: str = "crop"  # crop (shorter side, then the centre) | stretch
    split_fractions: tuple[float, float] = (0.6, 0.2)  # train and val shares of a seeded class-disjoint split
    split_seed: int = 0
    label_column: str | None = None  # csv tables: the label column (null: the last)
    augment: str = "none"  # none | auto | photo | glyph (seeded, training tasks only)
    within_group: bool = False  # draw each training task's classes from one group (alphabet)
    train_on: str = "train"  # train | train+val: a final model on the validation classes too (needs val_every 0)
    val_every: int = 100  # validate on the val split every N steps (0: never; the last step is kept)
    val_tasks: int = 100
    checkpoint_every: int = 50  # write a resumable checkpoint every N steps (and at the end)
    keep_checkpoints: int = 2  # resumable checkpoints kept; older ones are the fallback for a torn newest
    device: str = "auto"  # auto | cpu | cuda
    compress: str | None = None  # a compression spec applied before training (fewbit.compress.compress_)
    init_from: str | None = None  # a run directory whose weights (those that fit) start this run's model
    teacher: str | None = None  # a run directory whose model teaches this one (distillation; supervised algorithms)
    teacher_weight: float = 0.5  # the distillation loss's share of the loss (the rest: cross-entropy)
    teacher_temperature: float = 4.0  # softens both distributions (Hinton et al. 2015)

    def __post_init__(self) -> None:
        check(isinstance(self.dataset, str) and bool(self.dataset), OWNER, "dataset",
              "required: give a data spec (--dataset SPEC), e.g. sinusoid or omniglot-minimal:DIR")
        from fewbit.models import BACKBONES

        check(self.backbone in ("auto", *BACKBONES), OWNER, "backbone",
              f"unknown backbone {brief(self.backbone)}; choose one of auto, {', '.join(BACKBONES)}")
        for name, low in (("ways", 1), ("shots", 1), ("queries", 1), ("meta_batch", 1), ("steps", 0),
                          ("batch_size", 1), ("image_size", 8), ("val_every", 0),
                          ("checkpoint_every", 0), ("keep_checkpoints", 1)):
            value = getattr(self, name)
            check(isinstance(value, int) and not isinstance(value, bool) and value >= low, OWNER, name,
                  f"must be an integer >= {low}, got {brief(value)}")
        from fewbit.evaluation import check_task_count

        check_task_count(self.val_tasks, f"{OWNER}.val_tasks", ConfigError)
        check(self.image_size <= MAX_IMAGE_SIZE, OWNER, "image_size",
              f"must be at most {MAX_IMAGE_SIZE} pixels, got {self.image_size}")
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
        check(self.compress is None or (isinstance(self.compress, str) and bool(self.compress)), OWNER, "compress",
              f"must be a compression spec string or null, got {brief(self.compress)}")
        check(isinstance(self.meta, MetaConfig), OWNER, "meta",
              f"must be a fewbit.meta.MetaConfig, got {type(self.meta).__name__}")
        object.__setattr__(self, "meta", full_config(self.meta))  # the algorithm's own settings, defaults filled
        from fewbit.data.augment import AUGMENTS

        check(self.augment in AUGMENTS, OWNER, "augment",
              f"must be one of {', '.join(AUGMENTS)}, got {self.augment!r}")
        check(isinstance(self.within_group, bool), OWNER, "within_group",
              f"must be true or false, got {self.within_group!r}")
        check(self.train_on in TRAIN_ON, OWNER, "train_on",
              f"must be one of {', '.join(TRAIN_ON)}, got {brief(self.train_on)}")
        check(self.train_on == "train" or self.val_every == 0, OWNER, "train_on",
              "train+val leaves no unseen classes to validate on; set val_every: 0 (--val-every 0)")
        try:
            self.data_options()
        except ConfigError as exc:
            raise ConfigError(str(exc).replace("DataOptions.", f"{OWNER}.", 1)) from None

    def data_options(self, progress: bool = True) -> Any:
        """The `fewbit.data.DataOptions` this run reads its data with."""
        from fewbit.data.sources import DataOptions

        return DataOptions(image_size=self.image_size, channels=self.channels, invert=self.invert,
                           normalize=self.normalize, resize=self.resize, split_fractions=self.split_fractions,
                           split_seed=self.split_seed, label_column=self.label_column, progress=progress)

    @property
    def algorithm(self) -> str:
        """The algorithm's name (`meta.algorithm`)."""
        return str(self.meta.algorithm)

    @property
    def regression(self) -> bool:
        """Whether the data spec names a regression family (sinusoid)."""
        return self.dataset.partition(":")[0] == "sinusoid"

    @property
    def table(self) -> bool:
        """Whether the data spec names a table (`csv:PATH`)."""
        return self.dataset.partition(":")[0] == "csv"

    @property
    def resolved_backbone(self) -> str:
        """The backbone name with `auto` resolved (mlp for regression and tables, conv4 for images)."""
        if self.backbone != "auto":
            return self.backbone
        return "mlp" if self.regression or self.table else "conv4"

    def to_dict(self) -> dict[str, Any]:
        """A plain, YAML-ready dict (with `version`); `meta` nested."""
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a dict; MetaConfig fields may sit at the top level or under `meta`."""
        return from_dict(cls, _fold_meta(data))

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


def load_config(path: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """The TrainConfig of YAML file `path` (optional) with `overrides` (None values ignored) on top."""
    data: dict[str, Any] = load_yaml(path) if path is not None else {}
    data.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig.from_dict(data)
