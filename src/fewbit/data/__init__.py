"""Data: sources named by a spec string (glyphs, sinusoid, omniglot, folder, csvsplit, csv, ...),
episodic sampling, augmentation, and the Task type.

Each kind of source registers itself in `fewbit.data.registry` when its module is imported; the
package imports every built-in kind here (the registry imports none of them).
"""

# The built-in kinds register themselves on import, in this order (the order `spec_help` lists them).
# isort: off
from fewbit.data import glyphs, sinusoid, omniglot, folder, table, series  # noqa: F401
# isort: on
from fewbit.data.dataset import ImageDataset
from fewbit.data.episodes import EpisodeSampler
from fewbit.data.options import ImageOptions, InkOptions, SplitOptions
from fewbit.data.registry import SOURCES, parse_spec, register_source, spec_help
from fewbit.data.series import SeriesDataset, SeriesOptions, SeriesSource
from fewbit.data.sinusoid import SinusoidOptions, SinusoidSampler
from fewbit.data.sources import ImageSource, RegressionSource, TableSource, data_options, load_source, load_split
from fewbit.data.table import TableDataset, TableOptions
from fewbit.data.task import Task

__all__ = [
    "SOURCES",
    "EpisodeSampler",
    "ImageDataset",
    "ImageOptions",
    "ImageSource",
    "InkOptions",
    "RegressionSource",
    "SeriesDataset",
    "SeriesOptions",
    "SeriesSource",
    "SinusoidOptions",
    "SinusoidSampler",
    "SplitOptions",
    "TableDataset",
    "TableOptions",
    "TableSource",
    "Task",
    "data_options",
    "load_source",
    "load_split",
    "parse_spec",
    "register_source",
    "spec_help",
]
