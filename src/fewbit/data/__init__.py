"""Datasets (omniglot, glyphs, sinusoid), episodic sampling, and the Task type."""

from fewbit.data.dataset import ImageDataset
from fewbit.data.episodes import EpisodeSampler
from fewbit.data.sinusoid import SinusoidSampler
from fewbit.data.sources import ImageSource, RegressionSource, load_source, load_split
from fewbit.data.task import Task

__all__ = [
    "EpisodeSampler",
    "ImageDataset",
    "ImageSource",
    "RegressionSource",
    "SinusoidSampler",
    "Task",
    "load_source",
    "load_split",
]
