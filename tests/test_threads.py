"""`--threads N` and the default thread count that shares the cores."""

from __future__ import annotations

import os

import pytest
import torch

from fewbit import threads
from fewbit.cli import main


def test_default_divides_the_available_cores_among_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "_USER_OMP", "")
    monkeypatch.setattr(threads, "available_cores", lambda: 8)
    assert threads.default_threads() == 8
    assert threads.default_threads(3) == 2
    assert threads.default_threads(16) == 1
    monkeypatch.setattr(threads, "_USER_OMP", "3")  # the user's OMP_NUM_THREADS wins
    assert threads.default_threads(2) == 3


def test_limited_sets_torch_blas_and_env_then_restores_them() -> None:
    before, env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    with threads.limited(1) as n:
        assert n == 1 and torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"
    assert torch.get_num_threads() == before and os.environ.get("OMP_NUM_THREADS") == env
    with threads.limited(None) as n:  # the default never raises what torch already uses
        assert 1 <= n <= before


def test_the_cli_computes_with_the_threads_asked_for(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import fewbit.cli.train as train_cli

    seen = []

    def spy(args):  # stands in for the evaluation: records what it would compute with
        seen.append((torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")))
        return train_cli.Output({}, "")

    monkeypatch.setattr(train_cli, "run_eval", spy)
    before = torch.get_num_threads()
    assert main(["eval", "some-run", "--threads", "1"]) == 0
    assert seen[-1] == (1, "1") and torch.get_num_threads() == before
    with pytest.raises(SystemExit):
        main(["eval", "some-run", "--threads", "0"])
    assert "must be >= 1" in capsys.readouterr().err


def test_threads_beyond_the_available_cores_are_bounded_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--threads 1000` started a thousand threads (`ImportError: failed to map segment`, or tasks
    many times slower); now the cores this process may use, with one warning line."""
    import fewbit.cli.sweep as sweep_cli
    import fewbit.cli.train as train_cli

    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    seen = []

    def spy(args):  # records what the command would compute with, and what it was handed
        seen.append((torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS"), args.threads))
        return train_cli.Output({}, "")

    monkeypatch.setattr(train_cli, "run_eval", spy)
    monkeypatch.setattr(sweep_cli, "run", spy)
    before = torch.get_num_threads()
    assert main(["eval", "some-run", "--threads", "1000"]) == 0
    assert seen[-1] == (2, "2", 2) and torch.get_num_threads() == before
    err = capsys.readouterr().err.splitlines()
    assert err == ["fewbit: warning: 1000 threads asked for, but this process may use 2 core(s); computing with 2"]
    assert main(["sweep", "--out", "s", "--workers", "2", "--threads", "1000"]) == 0
    assert seen[-1][2] == 2 and "1000 threads asked for" in capsys.readouterr().err  # each worker gets 2
    assert main(["eval", "some-run", "--threads", "2"]) == 0 and capsys.readouterr().err == ""


def test_the_api_never_computes_with_more_threads_than_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    before = torch.get_num_threads()
    with pytest.warns(UserWarning, match="1000 threads asked for"), threads.limited(1000) as n:
        assert n == 2 and torch.get_num_threads() == 2
    assert torch.get_num_threads() == before
    monkeypatch.setattr(threads, "_USER_OMP", "1000")  # OMP_NUM_THREADS=1000: the default is bounded too
    assert threads.default_threads() == 2
    with pytest.raises(ValueError, match="threads must be an integer >= 1"):
        threads.bounded_threads(0)
