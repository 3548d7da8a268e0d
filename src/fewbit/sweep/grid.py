"""SweepConfig: the grid of bits x sparsity x algorithm x (post-hoc | aware) cells, validated up front."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from fewbit.config import brief, check, from_dict, load_yaml, to_dict
from fewbit.errors import ConfigError
from fewbit.evaluation import check_task_count
from fewbit.meta import ALGORITHMS, MetaConfig

OWNER = "SweepConfig"
MODES = ("aware", "posthoc")
FLOAT_BITS = 32
# Documented limit (docs/bad-input.md): cells of one grid, counted as bits x sparsity x algorithms
# x modes before duplicates are merged. Each cell trains a model; a thousand already take days.
MAX_CELLS = 10_000


@dataclasses.dataclass(frozen=True)
class Cell:
    """One point of the grid. `mode` is `float` for the uncompressed reference (bits 32, sparsity 0)."""

    algorithm: str
    bits: int
    sparsity: float
    mode: str

    @property
    def compressed(self) -> bool:
        return self.bits != FLOAT_BITS or self.sparsity > 0

    @property
    def cell_id(self) -> str:
        """A stable folder name, e.g. `protonet-w4-s0.75-aware`."""
        return f"{self.algorithm}-w{self.bits}-s{self.sparsity:g}-{self.mode}"

    @property
    def label(self) -> str:
        parts = ["fp32" if self.bits == FLOAT_BITS else f"w{self.bits}"]
        if self.sparsity:
            parts.append(f"{int(round(100 * self.sparsity))}%")
        if self.compressed:
            parts.append(self.mode)
        return " ".join(parts)

    def spec(self, act_bits: int | None) -> str | None:
        """The compression spec string of this cell (prune first, then quantize), or None for float."""
        parts = []
        if self.sparsity > 0:
            parts.append(f"prune:{self.sparsity:g}")
        if self.bits != FLOAT_BITS:
            parts.append(f"quant:w{self.bits}" + (f"a{act_bits}" if act_bits else ""))
        return ",".join(parts) or None


def _default_algorithm() -> str:

    return MetaConfig().algorithm


@dataclasses.dataclass(frozen=True, kw_only=True)
class SweepConfig:
    """A sweep: the training set-up shared by every cell (`base`, TrainConfig fields) and the grid."""

    base: dict[str, Any] = dataclasses.field(default_factory=dict)
    bits: tuple[int, ...] = (32, 8, 4, 3, 2, 1)
    sparsity: tuple[float, ...] = (0.0, 0.5, 0.75, 0.9)
    algorithms: tuple[str, ...] = dataclasses.field(default_factory=lambda: (_default_algorithm(),))
    modes: tuple[str, ...] = MODES
    act_bits: int | None = 8  # activation bits of compressed cells (None: float activations)
    eval_tasks: int = 600
    eval_queries: int = 15
    posthoc_finetune_steps: int = 0  # short compressed fine-tuning after post-hoc compression
    calibration_batches: int = 4  # batches of training tasks that calibrate post-hoc quantization
    latency_tasks: int = 10  # single-task adaptations timed for the latency column

    def __post_init__(self) -> None:
        for name in ("bits", "sparsity", "algorithms", "modes"):
            value = getattr(self, name)
            check(isinstance(value, (list, tuple)), OWNER, name, f"must be a list, got {type(value).__name__}")
        check(all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in self.sparsity), OWNER, "sparsity",
              f"must be a list of numbers, got {brief(self.sparsity)}")
        object.__setattr__(self, "bits", tuple(self.bits))
        object.__setattr__(self, "sparsity", tuple(float(s) for s in self.sparsity))
        object.__setattr__(self, "algorithms", tuple(self.algorithms))
        object.__setattr__(self, "modes", tuple(self.modes))
        check(isinstance(self.base, dict), OWNER, "base", "must be a mapping of TrainConfig fields")
        for name in ("bits", "sparsity", "algorithms", "modes"):
            check(len(getattr(self, name)) > 0, OWNER, name, "must not be empty")
        size = len(self.bits) * len(self.sparsity) * len(self.algorithms) * len(self.modes)
        if size > MAX_CELLS:
            raise ConfigError(
                f"{OWNER}: the grid of {len(self.bits):,} bits x {len(self.sparsity):,} sparsities x "
                f"{len(self.algorithms):,} algorithms x {len(self.modes):,} modes has {size:,} cells, more than the "
                f"limit of {MAX_CELLS:,}; sweep fewer values")
        for name, low in (("eval_queries", 1), ("posthoc_finetune_steps", 0), ("calibration_batches", 0)):
            value = getattr(self, name)
            check(isinstance(value, int) and value >= low, OWNER, name,
                  f"must be an integer >= {low}, got {brief(value)}")

        for name in ("eval_tasks", "latency_tasks"):
            check_task_count(getattr(self, name), f"{OWNER}.{name}", ConfigError)
        check(self.act_bits is None or (isinstance(self.act_bits, int) and 1 <= self.act_bits <= 8), OWNER,
              "act_bits", f"must be 1..8 or null, got {brief(self.act_bits)}")
        self.cells()  # every cell is checked before any work starts

    def cells(self) -> list[Cell]:
        """Every cell of the grid, each once, in grid order; the float reference once per algorithm.
        Invalid cells raise ConfigError."""

        out: dict[Cell, None] = {}  # an ordered set: merging duplicates stays linear in the grid's size
        for alg in self.algorithms:
            for bits in self.bits:
                for s in self.sparsity:
                    for mode in self.modes:
                        cell = Cell(alg, bits, s, mode)
                        _check_cell(cell, ALGORITHMS)
                        if not cell.compressed:
                            cell = Cell(alg, bits, s, "float")
                        out.setdefault(cell)
            if "posthoc" in self.modes:
                out.setdefault(Cell(alg, FLOAT_BITS, 0.0, "float"))  # post-hoc cells start from the float model
        return list(out)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SweepConfig:
        return from_dict(cls, data)

    @classmethod
    def from_yaml(cls, path: str | Path) -> SweepConfig:
        return cls.from_dict(load_yaml(path))


def _check_cell(cell: Cell, algorithms: tuple[str, ...]) -> None:
    where = f"sweep cell {cell.cell_id}"
    if cell.algorithm not in algorithms:
        raise ConfigError(f"{where}: unknown algorithm {brief(cell.algorithm)}; choose one of {', '.join(algorithms)}")
    if not isinstance(cell.bits, int) or not (cell.bits == FLOAT_BITS or 1 <= cell.bits <= 8):
        raise ConfigError(f"{where}: bits must be 1..8 or 32 (float), got {brief(cell.bits)}")
    if not 0.0 <= cell.sparsity < 1.0:
        raise ConfigError(f"{where}: sparsity must be in [0, 1), got {brief(cell.sparsity)}")
    if cell.mode not in MODES:
        raise ConfigError(f"{where}: mode must be one of {', '.join(MODES)}, got {brief(cell.mode)}")


def parse_list(text: str, kind: type) -> tuple[Any, ...]:
    """`"32,4,2"` -> (32, 4, 2) for a CLI flag; a clear error for a bad item."""
    items = [t for t in re.split(r"[,\s]+", text.strip()) if t]
    try:
        return tuple(kind(t) for t in items)
    except ValueError:
        raise ConfigError(f"cannot read {text!r} as a list of {kind.__name__}") from None
