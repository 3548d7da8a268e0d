"""Data: sources named by a spec string (glyphs, sinusoid, omniglot, folder, csvsplit, csv), episodic
sampling, augmentation, and the Task type."""

from fewbit.data.dataset import ImageDataset
from fewbit.data.episodes import EpisodeSampler
from fewbit.data.sinusoid import SinusoidSampler
from fewbit.data.sources import (
    DataOptions,
    ImageSource,
    RegressionSource,
    TableSource,
    load_source,
    load_split,
)
from fewbit.data.table import TableDataset
from fewbit.data.task import Task

__all__ = [
    "DataOptions",
    "EpisodeSampler",
    "ImageDataset",
    "ImageSource",
    "RegressionSource",
    "SinusoidSampler",
    "TableDataset",
    "TableSource",
    "Task",
    "load_source",
    "load_split",
]
