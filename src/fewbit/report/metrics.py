"""Summary statistics: mean with a 95% confidence interval."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence


@dataclasses.dataclass(frozen=True)
class MeanCI:
    """Mean of `n` values and the half-width of its 95% interval (1.96 * std / sqrt(n))."""

    mean: float
    ci95: float
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.4f} +- {self.ci95:.4f} (n={self.n})"


def mean_ci(values: Sequence[float]) -> MeanCI:
    """Mean and 95% CI half-width of `values` (population std, as few-shot papers report)."""
    n = len(values)
    if n == 0:
        return MeanCI(float("nan"), float("nan"), 0)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / n
    return MeanCI(mean, 1.96 * math.sqrt(var) / math.sqrt(n), n)
