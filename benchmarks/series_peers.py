"""The practitioner's baselines for few-shot series classification, each fitted on one task's support set only.

    nn1_euclidean     1-nearest neighbour, Euclidean distance over all channels and time steps (numpy)
    nn1_dtw           1-nearest neighbour, dependent multivariate DTW, full window unless `window`
                      is given (aeon's `dtw_pairwise_distance`)
    minirocket_ridge  aeon's MiniRocket transform (10,000 kernels) fitted on the support set, then
                      StandardScaler(with_mean=False) + RidgeClassifierCV(alphas=logspace(-3, 3, 10)):
                      aeon's own MiniRocketClassifier pipeline, fitted on the support set

Inputs are float arrays `[N, C, L]` (one length: after fewbit's length rule), labels any array;
each returns the predicted labels of the queries. aeon and scikit-learn are imported when a peer
needs them; `missing()` says what is absent, so a benchmark can skip the peers cleanly
(`benchmarks/signals.py` imports this module). aeon 1.6 pins numpy 2.3, so it lives in its own
environment, not in fewbit's (see the report of issue 21).

    python benchmarks/series_peers.py            # times each peer on a 5-way 1-shot task of length 512
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from collections.abc import Callable

import numpy as np

MINIROCKET_KERNELS = 10_000


def missing() -> list[str]:
    """The packages the aeon peers need that are not installed (empty: all there)."""
    return [name for name in ("aeon", "sklearn") if importlib.util.find_spec(name) is None]


def _check(support_x: np.ndarray, support_y: np.ndarray, query_x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    support_x, query_x = np.asarray(support_x, np.float64), np.asarray(query_x, np.float64)
    if support_x.ndim != 3 or query_x.ndim != 3 or support_x.shape[1:] != query_x.shape[1:]:
        raise ValueError(f"series peers need [N, C, L] support and query of one shape, got {support_x.shape} "
                         f"and {query_x.shape}")
    if len(support_y) != len(support_x) or len(support_x) == 0:
        raise ValueError(f"{len(support_y)} labels for {len(support_x)} support series")
    return support_x, query_x


def nn1_euclidean(support_x: np.ndarray, support_y: np.ndarray, query_x: np.ndarray) -> np.ndarray:
    """The label of each query's nearest support series (Euclidean over channels and time)."""
    s, q = _check(support_x, support_y, query_x)
    s, q = s.reshape(len(s), -1), q.reshape(len(q), -1)
    d = (q * q).sum(1)[:, None] + (s * s).sum(1)[None, :] - 2.0 * q @ s.T  # [queries, support]
    return np.asarray(support_y)[d.argmin(axis=1)]


def nn1_dtw(
    support_x: np.ndarray, support_y: np.ndarray, query_x: np.ndarray, *, window: float | None = None
) -> np.ndarray:
    """The label of each query's nearest support series under DTW (dependent across channels;
    `window` a fraction of the length, None: the full window)."""
    from aeon.distances import dtw_pairwise_distance

    s, q = _check(support_x, support_y, query_x)
    d = dtw_pairwise_distance(q, s, window=window)  # [queries, support]
    return np.asarray(support_y)[d.argmin(axis=1)]


def minirocket_ridge(
    support_x: np.ndarray, support_y: np.ndarray, query_x: np.ndarray, *, seed: int = 0,
    n_kernels: int = MINIROCKET_KERNELS,
) -> np.ndarray:
    """MiniRocket features fitted on the support set, a ridge classifier (cross-validated alpha) on them."""
    from aeon.transformations.collection.convolution_based import MiniRocket
    from sklearn.linear_model import RidgeClassifierCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    s, q = _check(support_x, support_y, query_x)
    rocket = MiniRocket(n_kernels=n_kernels, random_state=seed)
    features = rocket.fit_transform(s.astype(np.float32))
    model = make_pipeline(StandardScaler(with_mean=False), RidgeClassifierCV(alphas=np.logspace(-3, 3, 10)))
    model.fit(features, np.asarray(support_y))
    return model.predict(rocket.transform(q.astype(np.float32)))


PEERS: dict[str, Callable[..., np.ndarray]] = {
    "1nn-euclidean": nn1_euclidean,
    "1nn-dtw": nn1_dtw,
    "minirocket-ridge": minirocket_ridge,
}
NEEDS_AEON = ("1nn-dtw", "minirocket-ridge")


def _task(ways: int, shots: int, queries: int, length: int, seed: int) -> tuple[np.ndarray, ...]:
    """A task from the `signals` family, zscored as fewbit prepares series: `[N, C, L]` arrays and labels."""
    from fewbit.data.signals import generate_signals
    from fewbit.runtime.series import SeriesPreprocessing

    data = generate_signals(classes=ways, per_class=shots + queries, length=length, seed=seed)
    x = SeriesPreprocessing(channels=data.channels, length=length).prepare(data.series)[:, :, 0]
    y = np.repeat(np.arange(ways), shots + queries)
    support = np.concatenate([np.arange(c * (shots + queries), c * (shots + queries) + shots) for c in range(ways)])
    query = np.setdiff1d(np.arange(len(y)), support)
    return x[support], y[support], x[query], y[query]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ways", type=int, default=5)
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--queries", type=int, default=15)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    sx, sy, qx, qy = _task(args.ways, args.shots, args.queries, args.length, seed=0)
    out: dict[str, object] = {"task": {"ways": args.ways, "shots": args.shots, "queries_per_class": args.queries,
                                       "channels": int(sx.shape[1]), "length": args.length}}
    absent = missing()
    for name, peer in PEERS.items():
        if name in NEEDS_AEON and absent:
            out[name] = {"skipped": f"needs {', '.join(absent)}"}
            continue
        start = time.perf_counter()
        predicted = peer(sx, sy, qx)  # the first call compiles aeon's numba kernels
        first = time.perf_counter() - start
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            predicted = peer(sx, sy, qx)
            times.append(time.perf_counter() - start)
        out[name] = {"first_call_s": round(first, 4), "median_s": round(float(np.median(times)), 4),
                     "accuracy": round(float(np.mean(predicted == qy)), 4)}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
