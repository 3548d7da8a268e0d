"""read_runs and score_runs on official-layout one-shot runs built in tmp_path."""

from __future__ import annotations

import shutil

import pytest
import torch

from fewbit.data.oneshot_runs import OneShotRun, read_runs, score_runs
from fewbit.errors import ConfigError, DataError


def pixels(x: torch.Tensor) -> torch.Tensor:
    """A pixel-space embedding: `[n, 1, H, W] -> [n, H*W]`."""
    return x.flatten(1)


def pixel_classifier(support_x: torch.Tensor, query_x: torch.Tensor) -> torch.Tensor:
    """Scores `[n_query, n_support]`: minus the pixel distance."""
    return -torch.cdist(query_x.flatten(1), support_x.flatten(1))


def _one_line_error(excinfo: pytest.ExceptionInfo[DataError], *words: str) -> None:
    message = str(excinfo.value)
    assert message and "\n" not in message, message
    for word in words:
        assert word in message, message


def test_read_runs_shapes_and_answers(tmp_path, make_oneshot_runs):
    runs = read_runs(make_oneshot_runs(tmp_path / "runs", runs=2, ways=20))
    assert [r.name for r in runs] == ["run01", "run02"]
    for run in runs:
        assert run.support_x.shape == (20, 1, 28, 28) and run.query_x.shape == (20, 1, 28, 28)
        assert run.support_x.dtype == torch.float32
        assert run.support_x.min() >= 0 and run.support_x.max() == 1.0  # strokes = 1
        assert (run.support_x == 0).float().mean() > 0.5  # background = 0
        assert sorted(run.answers.tolist()) == list(range(20))  # each class queried once
        assert run.support_names[0] == f"{run.name}/training/class01.png"
        assert run.query_names[0] == f"{run.name}/test/item01.png"
        assert run.ways == 20
    # the listed answer really is the copied support image
    run = runs[0]
    assert torch.equal(run.query_x[3], run.support_x[run.answers[3]])


def test_exact_copies_score_zero(tmp_path, make_oneshot_runs):
    runs = read_runs(make_oneshot_runs(tmp_path / "runs", runs=2))
    result = score_runs(runs, pixels)
    assert result["mode"] == "embedding" and result["num_runs"] == 2
    assert result["run_names"] == ["run01", "run02"]
    assert result["error_percent_per_run"] == [0.0, 0.0]
    assert result["mean_error_percent"] == 0.0


def test_noisy_copies_score_zero(tmp_path, make_oneshot_runs):
    runs = read_runs(make_oneshot_runs(tmp_path / "runs", runs=2, noise=0.02, seed=3))
    assert not torch.equal(runs[0].query_x[0], runs[0].support_x[runs[0].answers[0]])
    assert score_runs(runs, pixels)["mean_error_percent"] == 0.0


def test_wrong_answers_score_high_error(tmp_path, make_oneshot_runs):
    runs = read_runs(make_oneshot_runs(tmp_path / "runs", runs=2, wrong_answers=True))
    result = score_runs(runs, pixels)
    assert result["error_percent_per_run"] == [100.0, 100.0]
    assert result["mean_error_percent"] == 100.0


def test_classifier_mode(tmp_path, make_oneshot_runs):
    runs = read_runs(make_oneshot_runs(tmp_path / "runs", runs=2, ways=5))
    assert score_runs(runs, pixel_classifier, mode="classifier")["mean_error_percent"] == 0.0
    flipped = score_runs(runs, lambda s, q: -pixel_classifier(s, q), mode="classifier")
    assert flipped["mean_error_percent"] > 50.0


def test_classifier_keeps_gradients(tmp_path, make_oneshot_runs):
    """A classifier that adapts on the support set needs autograd inside predict."""
    runs = read_runs(make_oneshot_runs(tmp_path / "runs", runs=1, ways=5))

    def adapting(support_x, query_x):
        w = torch.zeros(support_x.shape[0], support_x[0].numel(), requires_grad=True)
        loss = torch.nn.functional.cross_entropy(support_x.flatten(1) @ w.T, torch.arange(support_x.shape[0]))
        (grad,) = torch.autograd.grad(loss, w)
        return query_x.flatten(1) @ (w - 10.0 * grad).T

    assert score_runs(runs, adapting, mode="classifier")["mean_error_percent"] == 0.0


def test_zip_matches_folder(tmp_path, make_oneshot_runs, zip_folder):
    folder = make_oneshot_runs(tmp_path / "runs", runs=2, ways=5)
    from_folder = read_runs(folder)
    flat = zip_folder(folder, tmp_path / "runs.zip")
    nested = zip_folder(folder, tmp_path / "nested.zip", arcroot="all")
    for archive in (flat, nested):
        from_zip = read_runs(archive)
        assert len(from_zip) == 2
        for a, b in zip(from_zip, from_folder):
            assert torch.equal(a.support_x, b.support_x) and torch.equal(a.query_x, b.query_x)
            assert torch.equal(a.answers, b.answers)


def test_a_single_run_folder(tmp_path, make_oneshot_runs):
    folder = make_oneshot_runs(tmp_path / "runs", runs=1, ways=5)
    (run,) = read_runs(folder / "run01")
    assert run.name == "run01" and run.ways == 5
    assert score_runs([run], pixels)["mean_error_percent"] == 0.0


def test_image_size_and_as_task(tmp_path, make_oneshot_runs):
    (run,) = read_runs(make_oneshot_runs(tmp_path / "runs", runs=1, ways=5), image_size=16)
    task = run.as_task()
    assert task.support_x.shape == (1, 5, 1, 16, 16) and task.query_x.shape == (1, 5, 1, 16, 16)
    assert task.support_y.tolist() == [[0, 1, 2, 3, 4]] and torch.equal(task.query_y[0], run.answers)
    assert task.ways == 5


def test_score_argument_errors(tmp_path, make_oneshot_runs):
    runs = read_runs(make_oneshot_runs(tmp_path / "runs", runs=1, ways=5))
    with pytest.raises(ConfigError, match="mode"):
        score_runs(runs, pixels, mode="nearest")
    with pytest.raises(DataError):
        score_runs([], pixels)
    with pytest.raises(ValueError, match="expected"):
        score_runs(runs, lambda s, q: torch.zeros(3, 3), mode="classifier")
    with pytest.raises(ValueError, match="expected"):
        score_runs(runs, lambda x: torch.zeros(2, 3))


def test_missing_root(tmp_path):
    with pytest.raises(DataError) as excinfo:
        read_runs(tmp_path / "absent")
    _one_line_error(excinfo, "does not exist", "run01")


def test_not_a_zip(tmp_path):
    path = tmp_path / "runs.zip"
    path.write_bytes(b"\x00" * 100)
    with pytest.raises(DataError) as excinfo:
        read_runs(path)
    _one_line_error(excinfo, "not a zip")


def test_folder_without_runs(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as excinfo:
        read_runs(tmp_path / "empty")
    _one_line_error(excinfo, "class_labels.txt")


def _small_runs(tmp_path, make_oneshot_runs):
    return make_oneshot_runs(tmp_path / "runs", runs=1, ways=5)


def test_malformed_label_line(tmp_path, make_oneshot_runs):
    folder = _small_runs(tmp_path, make_oneshot_runs)
    labels = folder / "run01" / "class_labels.txt"
    labels.write_text(labels.read_text() + "just-one-field\n")
    with pytest.raises(DataError) as excinfo:
        read_runs(folder)
    _one_line_error(excinfo, "line 6", "just-one-field")


def test_missing_query_image(tmp_path, make_oneshot_runs):
    folder = _small_runs(tmp_path, make_oneshot_runs)
    (folder / "run01" / "test" / "item03.png").unlink()
    with pytest.raises(DataError) as excinfo:
        read_runs(folder)
    _one_line_error(excinfo, "run01/test/item03.png", "missing")


def test_answer_not_a_support_image(tmp_path, make_oneshot_runs):
    folder = _small_runs(tmp_path, make_oneshot_runs)
    labels = folder / "run01" / "class_labels.txt"
    labels.write_text(labels.read_text().replace("training/class", "training/klass", 1))
    with pytest.raises(DataError) as excinfo:
        read_runs(folder)
    _one_line_error(excinfo, "klass", "not a support image")


def test_no_support_images(tmp_path, make_oneshot_runs):
    folder = _small_runs(tmp_path, make_oneshot_runs)
    shutil.rmtree(folder / "run01" / "training")
    with pytest.raises(DataError) as excinfo:
        read_runs(folder)
    _one_line_error(excinfo, "no support images")


def test_corrupt_image(tmp_path, make_oneshot_runs, zip_folder):
    folder = _small_runs(tmp_path, make_oneshot_runs)
    (folder / "run01" / "training" / "class02.png").write_bytes(b"garbage")
    with pytest.raises(DataError) as excinfo:
        read_runs(folder)
    _one_line_error(excinfo, "class02.png", "cannot decode")
    with pytest.raises(DataError) as excinfo:
        read_runs(zip_folder(folder, tmp_path / "runs.zip"))
    _one_line_error(excinfo, "member run01/training/class02.png")


def test_truncated_zip(tmp_path, make_oneshot_runs, zip_folder):
    path = zip_folder(_small_runs(tmp_path, make_oneshot_runs), tmp_path / "runs.zip")
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(DataError) as excinfo:
        read_runs(path)
    _one_line_error(excinfo, "truncated")


def test_oneshot_run_is_a_plain_record():
    support_x, query_x = torch.zeros(2, 1, 8, 8), torch.zeros(3, 1, 8, 8)
    run = OneShotRun("r", support_x, query_x, torch.tensor([0, 1, 1]), ("a", "b"), ("x",) * 3)
    assert run.ways == 2
