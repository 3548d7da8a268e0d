"""SearchConfig: the byte budget(s), the options per layer, and how candidates are scored; validated up front."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from fewbit.config import brief, check, load_yaml, to_dict
from fewbit.errors import ConfigError
from fewbit.evaluation import check_task_count
from fewbit.meta import ALGORITHMS
from fewbit.search.plan import BITS_CHOICES, PATTERNS, option_grid
from fewbit.train import TrainConfig

OWNER = "SearchConfig"
MAX_BUDGET = 64 << 20  # bytes: the knapsack counts single bytes up to this
MAX_BUDGETS = 16
MAX_OPTIONS = 200  # options per layer
MAX_EPISODES = 5000
MAX_TOP_K = 16
SENSITIVITY = ("measured", "fisher")
_BUDGET = re.compile(r"(\d+(?:\.\d+)?)\s*(k|kb|kib|m|mb|mib|b)?", re.IGNORECASE)


def parse_budget(value: Any, field: str = "budget") -> int:
    """Bytes from `24K`, `24KB`, `1.5M`, `24576` (K = 1024 bytes, as `--ram 256K`); ConfigError for
    anything else, zero, or more than MAX_BUDGET."""
    if isinstance(value, bool):
        raise ConfigError(f"{OWNER}.{field}: expected bytes like 24K or 24576, got {brief(value)}")
    if isinstance(value, int):
        nbytes = value
    else:
        match = _BUDGET.fullmatch(str(value).strip())
        if not match:
            raise ConfigError(f"{OWNER}.{field}: expected bytes like 24K, 1.5M or 24576, got {brief(value)}")
        unit = (match.group(2) or "b").lower()[0]
        nbytes = int(float(match.group(1)) * {"b": 1, "k": 1024, "m": 1 << 20}[unit])
    if not 1 <= nbytes <= MAX_BUDGET:
        raise ConfigError(f"{OWNER}.{field}: must be 1 byte to {MAX_BUDGET >> 20}M, got {brief(value)}")
    return nbytes


def parse_budgets(value: Any) -> tuple[int, ...]:
    """`"12K,16K,24K"` or a list of budgets -> bytes, each checked."""
    items = [v for v in re.split(r"[,\s]+", value.strip()) if v] if isinstance(value, str) else list(value)
    if not items:
        raise ConfigError(f"{OWNER}.budgets: give at least one budget, e.g. 24K")
    return tuple(parse_budget(v, "budgets") for v in items)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SearchConfig:
    """A budget search: `train` is the final training (every `fewbit train` setting); the rest is the search.

    `budgets`: file sizes in bytes (the `.fewbit` file, everything counted); one search each.
    `bits`, `sparsity`, `patterns`: the options of every stored Linear/Conv2d layer (a dense option
    once). `act_bits`: input activation bits of every layer (None: float); `lsq`: learned steps.
    `episodes`: meta-training tasks the sensitivity is measured on; `sensitivity`: `measured` (each
    option's loss increase on those tasks) or `fisher` (estimated from gradients; episodic
    algorithms). `top_k`: plans re-ranked by `rerank_steps` of compression-aware training and
    their accuracy on `rerank_tasks` validation tasks. `pilot_steps`: without a starting run, a
    float run trained this long is the start.
    `slack`: bytes kept free for what training changes in the file (its manifest's checksum).
    `eval_tasks`: test tasks the final model is scored on (0: validation tasks only).
    `uniform`: per budget, train that many uniform plans (one option on every layer) that fit, those
    of least estimated loss increase, exactly as the winner: the comparison (0: none).
    """

    train: TrainConfig
    budgets: tuple[int, ...]
    bits: tuple[int, ...] = BITS_CHOICES
    sparsity: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 0.9)
    patterns: tuple[str, ...] = PATTERNS
    act_bits: int | None = 8
    lsq: bool = False
    episodes: int = 100  # 4 layers x 45 options: 6-7 minutes of a 2-core machine (README, "Measured")
    sensitivity: str = "measured"
    episode_batch: int = 25
    top_k: int = 3
    rerank_steps: int = 50
    rerank_tasks: int = 100
    pilot_steps: int = 300
    slack: int = 64
    eval_tasks: int = 0
    uniform: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        check(isinstance(self.train, TrainConfig), OWNER, "train", "must be a TrainConfig (a mapping in YAML)")
        object.__setattr__(self, "budgets", parse_budgets(self.budgets))
        check(len(self.budgets) <= MAX_BUDGETS, OWNER, "budgets", f"at most {MAX_BUDGETS}, got {len(self.budgets)}")
        for name in ("bits", "sparsity", "patterns"):
            value = getattr(self, name)
            check(isinstance(value, (list, tuple)) and len(value) > 0, OWNER, name, f"must be a non-empty list, "
                  f"got {brief(value)}")
            object.__setattr__(self, name, tuple(value))
        for b in self.bits:
            check(b in BITS_CHOICES, OWNER, "bits", f"each must be one of {', '.join(map(str, BITS_CHOICES))}, "
                  f"got {brief(b)}")
        for s in self.sparsity:
            check(isinstance(s, (int, float)) and not isinstance(s, bool) and 0.0 <= s <= 0.9, OWNER, "sparsity",
                  f"each must be in 0..0.9, got {brief(s)}")
        for p in self.patterns:
            check(p in PATTERNS, OWNER, "patterns", f"each must be one of {', '.join(PATTERNS)}, got {brief(p)}")
        check(len(self.options()) <= MAX_OPTIONS, OWNER, "bits", f"more than {MAX_OPTIONS} options per layer")
        check(self.act_bits is None or (isinstance(self.act_bits, int) and not isinstance(self.act_bits, bool)
                                        and 1 <= self.act_bits <= 8), OWNER, "act_bits",
              f"must be 1..8 or null, got {brief(self.act_bits)}")
        check(isinstance(self.lsq, bool), OWNER, "lsq", f"must be true or false, got {brief(self.lsq)}")
        for name, low, high in (("episodes", 1, MAX_EPISODES), ("episode_batch", 1, 1000), ("top_k", 1, MAX_TOP_K),
                                ("rerank_steps", 0, 1_000_000), ("pilot_steps", 1, 10_000_000),
                                ("slack", 0, MAX_BUDGET), ("seed", 0, 2**63 - 1), ("uniform", 0, 8)):
            value = getattr(self, name)
            check(isinstance(value, int) and not isinstance(value, bool) and low <= value <= high, OWNER, name,
                  f"must be an integer in {low}..{high:,}, got {brief(value)}")
        check(self.sensitivity in SENSITIVITY, OWNER, "sensitivity",
              f"must be one of {', '.join(SENSITIVITY)}, got {brief(self.sensitivity)}")
        check(self.sensitivity != "fisher" or ALGORITHMS[self.train.algorithm].episodic, OWNER, "sensitivity",
              f"fisher needs an episodic algorithm's loss; {self.train.algorithm} trains on batches (use measured)")
        check_task_count(self.rerank_tasks, f"{OWNER}.rerank_tasks", ConfigError)
        check(isinstance(self.eval_tasks, int) and not isinstance(self.eval_tasks, bool) and self.eval_tasks >= 0,
              OWNER, "eval_tasks", f"must be an integer >= 0, got {brief(self.eval_tasks)}")
        if self.eval_tasks:
            check_task_count(self.eval_tasks, f"{OWNER}.eval_tasks", ConfigError)
        check(not self.train.regression, OWNER, "train", f"{self.train.dataset} is a regression family; "
              "the search scores classifiers on episodes")
        check(bool(self.train.dataset), OWNER, "train", "give the data (dataset: SPEC)")
        check(self.train.compress is None, OWNER, "train", "compress: the search chooses the spec; leave it out")
        check(self.train.init_from is None, OWNER, "train", "init_from: give the starting run as from_run (--from)")

    def options(self) -> list[Any]:
        """Every layer's options (`LayerOption`s)."""
        return option_grid(self.bits, self.sparsity, self.patterns)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchConfig:
        """From a mapping: `train:` a mapping of TrainConfig fields, `budget:` or `budgets:`, the rest as named."""
        if not isinstance(data, dict):
            raise ConfigError(f"{OWNER}: expected a mapping, got {type(data).__name__}")
        data = dict(data)
        data.pop("version", None)
        if "budget" in data:
            if "budgets" in data:
                raise ConfigError(f"{OWNER}.budget: give budget or budgets, not both")
            data["budgets"] = [data.pop("budget")]
        if "budgets" not in data:
            raise ConfigError(f"{OWNER}.budgets: give a byte budget, e.g. budget: 24K")
        train = data.pop("train", {})
        check(isinstance(train, (dict, TrainConfig)), OWNER, "train", "must be a mapping of TrainConfig fields")
        data["train"] = train if isinstance(train, TrainConfig) else TrainConfig.from_dict(train)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(str(k) for k in set(data) - names)
        if unknown:
            raise ConfigError(f"{OWNER}: unknown field(s) {', '.join(unknown[:8])}; known: {', '.join(sorted(names))}")
        if isinstance(data["budgets"], str):
            data["budgets"] = parse_budgets(data["budgets"])
        return cls(**data)

    @classmethod
    def from_yaml(cls, path: str | Path) -> SearchConfig:
        return cls.from_dict(load_yaml(path))
