"""Sweeps over bits x sparsity x algorithm x (post-hoc | compression-aware), with a table and Pareto plot."""

from fewbit.sweep.grid import Cell, SweepConfig
from fewbit.sweep.runner import run_sweep

__all__ = ["Cell", "SweepConfig", "run_sweep"]
