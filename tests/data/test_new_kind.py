"""Adding a kind of data is one module that registers itself: a toy kind defined here (its options
dataclass, its loader) is read, trained, scored and exported by the CLI that knows nothing of it."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fewbit.cli import main
from fewbit.config import check, setting
from fewbit.data.options import SplitOptions
from fewbit.data.registry import SOURCES, register_source
from fewbit.data.sources import TableSource
from fewbit.data.table import TableDataset
from fewbit.runtime.preprocess import TablePreprocessing


@dataclasses.dataclass(frozen=True, kw_only=True)
class BlobOptions(SplitOptions):
    """How far a blob's points lie from its centre."""

    blob_spread: float = setting(0.3, "spread of each class around its centre")

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0 < self.blob_spread < 10, self.owner, "blob_spread", "must be in (0, 10)")

    def for_preprocessing(self, preprocessing: object) -> BlobOptions:
        return self


def load_blobs(arg: str, options: BlobOptions, *, progress: bool = True) -> TableSource:
    """Twelve classes of 30 points around their own centres in 6 dimensions."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(12, 6))
    values = (np.repeat(centres, 30, axis=0) + options.blob_spread * rng.normal(size=(360, 6))).astype(np.float32)
    labels = np.repeat(np.arange(12), 30)
    features = tuple(f"x{i}" for i in range(6))
    base = TableDataset("blobs", values, labels, tuple(f"blob{i}" for i in range(12)), features)
    splits = {"train": base.subset_classes(list(range(6)), "blobs[train]"),
              "val": base.subset_classes([6, 7, 8], "blobs[val]"),
              "test": base.subset_classes([9, 10, 11], "blobs[test]"), "all": base}
    pre = TablePreprocessing(features=features, mean=(0.0,) * 6, std=(1.0,) * 6, label_column="label")
    return TableSource("blobs", splits, pre, {"layout": "generated blobs"})


@pytest.fixture
def blobs() -> Iterator[None]:
    register_source("blobs", options=BlobOptions, kind="table", path=False, backbone="mlp",
                    help="toy blobs")(load_blobs)
    yield
    del SOURCES["blobs"]


def test_a_new_kind_needs_no_change_outside_its_module(blobs: None, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    # its option is a flag, checked by its own dataclass
    assert main(["data", "info", "blobs", "--blob-spread", "0.2", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["classes"] == 12
    assert main(["data", "info", "blobs", "--blob-spread", "20"]) == 2
    assert "blob_spread" in capsys.readouterr().err
    run = tmp_path / "run"
    assert main(["train", "--dataset", "blobs", "--blob-spread", "0.2", "--algorithm", "protonet", "--ways", "3",
                 "--shots", "1", "--queries", "5", "--steps", "30", "--val-every", "0", "--quiet",
                 "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["eval", str(run), "--tasks", "50", "--queries", "5", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] > 0.6  # 3-way: chance is 1/3
    assert main(["export", str(run), "--out", str(tmp_path / "b.fewbit"), "--json"]) == 0
    assert (tmp_path / "b.fewbit").is_file()
    # the run remembers its options: a resumed or re-read run reads the same blobs
    assert "blob_spread: 0.2" in (run / "config.yaml").read_text()
