"""Test-time views: the dihedral turns of a task, adapted to one by one, their logits averaged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import fewbit.runtime as rt
from fewbit.data.task import Task
from fewbit.deploy import export
from fewbit.meta import MetaConfig, build_algorithm
from fewbit.meta.views import view as torch_view
from fewbit.meta.views import with_views
from fewbit.runtime.views import check_views, view
from tests.deploy.helpers import compressed_conv4, glyphs


def _task(seed: int = 0) -> tuple[np.ndarray, ...]:
    x, y = glyphs(5, 4, seed=seed)
    support = np.arange(0, 20, 4)
    query = np.setdiff1d(np.arange(20), support)
    return x[support], y[support], x[query], y[query]


@pytest.fixture(scope="module")
def runtime_model(tmp_path_factory: pytest.TempPathFactory) -> rt.RuntimeModel:
    path = tmp_path_factory.mktemp("views") / "m.fewbit"
    export(compressed_conv4(None, ways=0), path, algorithm="metabaseline")
    return rt.load(path)


def test_the_eight_views_are_the_distinct_symmetries_of_the_square() -> None:
    x = np.random.default_rng(0).random((2, 1, 6, 6), dtype=np.float32)
    turned = [view(x, k) for k in range(8)]
    assert all(t.shape == x.shape for t in turned)
    assert len({t.tobytes() for t in turned}) == 8
    np.testing.assert_array_equal(turned[0], x)
    np.testing.assert_array_equal(turned[1], np.rot90(x, 1, axes=(2, 3)))
    np.testing.assert_array_equal(turned[4], x[..., ::-1])
    for k in range(8):  # torch turns images exactly as the numpy runtime does
        np.testing.assert_array_equal(torch_view(torch.from_numpy(x), k).numpy(), turned[k])


@pytest.mark.parametrize("bad", [0, 2, 3, 16, True, 4.0, "8"])
def test_only_one_four_or_eight_views(bad: object) -> None:
    with pytest.raises(ValueError, match="views must be one of 1, 4, 8"):
        check_views(bad, (1, 28, 28))  # type: ignore[arg-type]


def test_views_need_square_images() -> None:
    assert check_views(1, (12,)) == 1
    for shape in [(12,), (3, 28, 32)]:
        with pytest.raises(ValueError, match="square images"):
            check_views(8, shape)


def test_the_views_logits_are_the_mean_of_each_turned_task(runtime_model: rt.RuntimeModel) -> None:
    sx, sy, qx, _ = _task()
    got = rt.adapt(runtime_model, sx, sy, views=8)
    assert isinstance(got, rt.ViewedTask) and got.settings["views"] == 8 and len(got.views) == 8
    want = np.mean([rt.adapt(runtime_model, view(sx, k), sy).logits(view(qx, k)) for k in range(8)], axis=0)
    np.testing.assert_allclose(got.logits(qx), want, rtol=1e-5, atol=1e-6)
    pred, score = got.scores(qx)
    np.testing.assert_array_equal(pred, want.argmax(1))
    assert np.all((score > 0) & (score <= 1))
    plain = rt.adapt(runtime_model, sx, sy, views=1)
    np.testing.assert_array_equal(plain.logits(qx), rt.adapt(runtime_model, sx, sy).logits(qx))


@pytest.mark.parametrize(("views", "turn"), [(4, 1), (8, 1), (8, 4)])
def test_views_make_the_scores_invariant_to_turning_the_task(
    runtime_model: rt.RuntimeModel, views: int, turn: int
) -> None:
    """Turning support and query alike (a rotation; a mirror for 8 views) only permutes the views."""
    sx, sy, qx, _ = _task(1)
    base = rt.adapt(runtime_model, sx, sy, views=views).logits(qx)
    turned = rt.adapt(runtime_model, view(sx, turn), sy, views=views).logits(view(qx, turn))
    np.testing.assert_allclose(turned, base, rtol=1e-4, atol=1e-5)
    one = rt.adapt(runtime_model, view(sx, turn), sy).logits(view(qx, turn))  # without views it is not
    assert np.abs(one - rt.adapt(runtime_model, sx, sy).logits(qx)).max() > 1e-3


def test_views_work_with_support_statistics_and_head_fine_tuning(runtime_model: rt.RuntimeModel) -> None:
    sx, sy, qx, qy = _task(2)
    for options in ({"norm_stats": "support"}, {"method": "sgd", "steps": 3, "lr": 0.1}):
        got = rt.adapt(runtime_model, sx, sy, views=4, **options)
        want = np.mean([rt.adapt(runtime_model, view(sx, k), sy, **options).logits(view(qx, k)) for k in range(4)],
                       axis=0)
        np.testing.assert_allclose(got.logits(qx), want, rtol=1e-5, atol=1e-5)
        assert got.predict(qx).shape == qy.shape


def test_torch_predictor_with_views_matches_the_runtime(runtime_model: rt.RuntimeModel) -> None:
    model = compressed_conv4(None, ways=0)
    algo = build_algorithm(MetaConfig(algorithm="metabaseline"), model=model)
    extras = algo.extra_parameters(model)

    def predict(task: Task) -> torch.Tensor:
        return algo.predict(model, dict(model.named_parameters()), task, extras)

    sx, sy, qx, qy = _task(3)
    task = Task(*(torch.from_numpy(a).unsqueeze(0) for a in (sx, sy, qx, qy)), ways=5)
    got = with_views(predict, 8, (1, 28, 28))(task).squeeze(0).detach().numpy()
    want = rt.adapt(runtime_model, sx, sy, views=8).logits(qx)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert with_views(predict, 1, (1, 28, 28)) is predict
    with pytest.raises(ValueError, match="square images"):
        with_views(predict, 4, (20,))


def test_an_artifact_may_default_to_views(tmp_path: Path) -> None:
    path = tmp_path / "m.fewbit"
    export(compressed_conv4(None, ways=0), path, algorithm="metabaseline")
    model = rt.load(path)
    model.adaptation["views"] = 4
    sx, sy, qx, _ = _task()
    assert len(rt.adapt(model, sx, sy).views) == 4  # type: ignore[union-attr]
    assert isinstance(rt.adapt(model, sx, sy, views=1), rt.AdaptedTask)
    model.adaptation["views"] = 5
    with pytest.raises(ValueError, match="views must be one of"):
        rt.adapt(model, sx, sy)
