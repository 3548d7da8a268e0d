"""Metrics, tables, plots and reports."""

from fewbit.report.metrics import MeanCI, mean_ci
from fewbit.report.tables import size_table

__all__ = ["MeanCI", "mean_ci", "size_table"]
