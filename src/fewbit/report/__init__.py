"""Metrics, tables, plots and reports."""

from fewbit.report.metrics import MeanCI, mean_ci

__all__ = ["MeanCI", "mean_ci"]
