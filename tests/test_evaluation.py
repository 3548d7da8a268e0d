import math
from pathlib import Path

import pytest
import torch

from fewbit.cli import main
from fewbit.errors import ConfigError, LimitError
from fewbit.evaluation import MAX_EVAL_EXAMPLES, EvalResult, eval_batch, eval_tasks, evaluate, pixel_prototypes
from fewbit.report.metrics import mean_ci
from tests.conftest import make_omniglot_folder
from tests.data.synthetic import synthetic_dataset


def test_mean_ci_formula():
    r = mean_ci([0.0, 1.0, 1.0, 0.0])
    assert r.mean == 0.5
    assert math.isclose(r.ci95, 1.96 * 0.5 / 2)


def test_pixel_prototypes_solve_an_easy_dataset():
    ds = synthetic_dataset(alphabets=2, classes_per_alphabet=5, per_class=6)
    res = evaluate(pixel_prototypes, ds, ways=5, shots=1, queries=3, tasks=40)
    assert res.tasks == 40 and res.ways == 5 and res.shots == 1
    assert res.accuracy > 0.95
    assert len(res.per_task) == 40


def test_random_predictor_scores_chance():
    ds = synthetic_dataset(alphabets=2, classes_per_alphabet=5, per_class=6)
    g = torch.Generator().manual_seed(0)
    res = evaluate(lambda t: torch.rand(t.num_tasks, t.query_y.shape[1], t.ways, generator=g), ds,
                   ways=5, shots=1, queries=5, tasks=200)
    assert abs(res.accuracy - 0.2) < 3 * res.ci95 + 0.02


def test_same_seed_same_tasks_different_seed_different():
    ds = synthetic_dataset()
    a = torch.cat([t.query_x for t in eval_tasks(ds, ways=3, shots=1, queries=2, tasks=10, seed=5)])
    b = torch.cat([t.query_x for t in eval_tasks(ds, ways=3, shots=1, queries=2, tasks=10, seed=5, batch=3)])
    c = torch.cat([t.query_x for t in eval_tasks(ds, ways=3, shots=1, queries=2, tasks=10, seed=6)])
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_regression_reports_mse():
    res = evaluate(lambda t: torch.zeros_like(t.query_y), None, shots=5, queries=10, tasks=50)
    assert res.metric == "mse"
    # E[(A sin)^2] = E[A^2]/2 with A ~ U[0.1, 5]: about 4.2
    assert 2.5 < res.value < 6.0


HUGE = 10**20
MAX_TASKS = 100_000  # docs/bad-input.md
TASKS_MESSAGE = f"must be a number of tasks in 1..{MAX_TASKS:,}, got {HUGE}"


def test_every_task_count_has_one_bound_and_one_message(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """`eval RUN --tasks 99999999999999999999` and a sweep's `eval_tasks: 1e20` ran for ever, and
    `eval --model --tasks` was refused as a `meta_batch`: one bound, one message, everywhere."""
    for flag, argv in (
        ("--tasks", ["eval", str(tmp_path / "run"), "--tasks", str(HUGE)]),
        ("--tasks", ["eval", "--model", "glyphs-conv4-w4", "--dataset", "glyphs", "--tasks", str(HUGE)]),
        ("--eval-tasks", ["sweep", "--out", str(tmp_path / "s"), "--eval-tasks", str(HUGE)]),
    ):
        with pytest.raises(SystemExit) as info:
            main(argv)
        err = capsys.readouterr().err
        assert info.value.code == 2 and f"argument {flag}: {TASKS_MESSAGE}" in err and err.count("\n") == 1, err
    # train's flags come from TrainConfig, which checks them before anything is read or written
    assert main(["train", "--dataset", "glyphs", "--steps", "0", "--val-every", "0", "--val-tasks", str(HUGE),
                 "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err == f"fewbit: error: TrainConfig.val_tasks: {TASKS_MESSAGE}\n"
    assert not (tmp_path / "s").exists() and not (tmp_path / "r").exists()
    config = tmp_path / "sweep.yaml"
    config.write_text(f"eval_tasks: {HUGE}\nbase: {{dataset: glyphs}}\n")
    assert main(["sweep", "--config", str(config), "--out", str(tmp_path / "s")]) == 2
    assert capsys.readouterr().err == f"fewbit: error: SweepConfig.eval_tasks: {TASKS_MESSAGE}\n"
    from fewbit.sweep.grid import SweepConfig
    from fewbit.train import TrainConfig

    with pytest.raises(ConfigError, match=f"TrainConfig.val_tasks: {TASKS_MESSAGE}"):
        TrainConfig(dataset="glyphs", val_tasks=HUGE)
    with pytest.raises(ConfigError, match=f"SweepConfig.latency_tasks: {TASKS_MESSAGE}"):
        SweepConfig(latency_tasks=HUGE)
    ds = synthetic_dataset(alphabets=2, classes_per_alphabet=5, per_class=6)
    with pytest.raises(LimitError, match=TASKS_MESSAGE):
        evaluate(pixel_prototypes, ds, ways=5, shots=1, queries=3, tasks=HUGE)
    from fewbit.evaluation import MAX_TASKS as limit
    from fewbit.evaluation import check_task_count

    assert limit == MAX_TASKS and check_task_count(MAX_TASKS) == MAX_TASKS
    for bad in (0, MAX_TASKS + 1, 2.5, True, "600"):
        with pytest.raises(LimitError):
            check_task_count(bad)


def test_eval_of_an_artifact_draws_large_tasks_a_few_at_a_time(capsys: pytest.CaptureFixture[str],
                                                               monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """20-way tasks of 16 images, 1,000 of them, were refused: `1000 tasks of 320 examples are ...
    examples at once; lower --meta-batch` (a flag eval does not have). They are drawn a batch at a time."""
    import fewbit.cli.train

    seen = {}

    def spy(model, dataset, **kwargs):  # noqa: ANN001, ANN003  (stands in for the scoring)
        seen.update(kwargs)
        shape = kwargs["tasks"], kwargs["ways"], kwargs["shots"], kwargs["queries"]
        return EvalResult("accuracy", 0.5, 0.01, *shape, ())

    monkeypatch.setattr(fewbit.cli.train, "evaluate_artifact", spy)
    images = make_omniglot_folder(tmp_path, root="bg", alphabets=5, characters=2, drawings=2, seed=0)
    code = main(["eval", "--model", "glyphs-conv4-w4", "--dataset", f"omniglot:{images}", "--ways", "20",
                 "--tasks", "1000", "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert seen["tasks"] == 1000 and seen["ways"] == 20 and seen.get("batch") is None  # evaluate_artifact's own


def test_evaluate_draws_large_tasks_within_the_bound_by_itself() -> None:
    """`evaluate` picks how many tasks to draw at once: 25 small ones, fewer large ones, never more
    than MAX_EVAL_EXAMPLES examples, and the same task list (the same scores) whatever the batch."""
    ds = synthetic_dataset(alphabets=3, classes_per_alphabet=10, per_class=6)
    sizes: list[int] = []

    def spy(task):  # noqa: ANN001, ANN202
        sizes.append(task.num_tasks * task.support_x.shape[1] + task.num_tasks * task.query_x.shape[1])
        return pixel_prototypes(task)

    assert eval_batch(5, 1, 15) == 25
    assert eval_batch(100, 1, 99) == MAX_EVAL_EXAMPLES // 10_000
    assert eval_batch(10_000, 5, 5) == 1
    whole = evaluate(spy, ds, ways=20, shots=1, queries=5, tasks=60)
    assert max(sizes) <= 25 * 120
    small = evaluate(pixel_prototypes, ds, ways=20, shots=1, queries=5, tasks=60, batch=7)
    assert whole.per_task == small.per_task


def test_a_split_of_exactly_ways_classes_warns_that_the_interval_covers_images_only() -> None:
    """A grouped split whose test part holds exactly `ways` classes gave an interval with no word of it."""
    ds = synthetic_dataset(alphabets=1, classes_per_alphabet=5, per_class=6)
    with pytest.warns(UserWarning, match="exactly 5 classes"):
        evaluate(pixel_prototypes, ds, ways=5, shots=1, queries=3, tasks=10)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluate(pixel_prototypes, ds, ways=4, shots=1, queries=3, tasks=10)
