"""Speed and peak memory of one second-order MAML meta-step and of a ProtoNet episode, side by side.

MAML: Conv-4 on 28x28, 5-way 1-shot, 15 queries per class, meta-batch 32, 1 inner step
(lr 0.4), second order, outer Adam step included. Methods, each in its own subprocess (so its
peak RSS is its own), on the same seeded tasks and the same initial weights:

  fewbit        fewbit's batched path (tasks folded into grouped convolutions)
  fewbit-loop   fewbit's per-task reference loop (torch.func.functional_call, one task at a time)
  fewbit-vmap   fewbit's generic torch.func.vmap path (opt-in: slow and memory-hungry on a CPU)
  higher        higher.innerloop_ctx, one task at a time (its documented MAML recipe)
  learn2learn   learn2learn.algorithms.MAML, clone/adapt one task at a time

The peers get the same Conv-4 with torch's fused nn.BatchNorm2d (batch statistics, no running
stats): the same function as fewbit's hand-written BatchNorm, and the faster choice for them.

ProtoNet: one episode (5-way and 20-way, 1-shot, 15 queries), forward + backward + Adam,
fewbit's ProtoNet against a plain-PyTorch loop written here.

Timing runs all methods round-robin in one process (this machine is shared, and its load
drifts: interleaving makes it hit every method alike); peak memory is measured separately, one
subprocess per method running two steps. Reported: median wall seconds of >= 10 steps after
2 warm-up steps, CPU seconds, peak RSS of the method's own process, FLOPs of one step
(torch.utils.flop_counter) and the achieved GFLOP/s, the loss of the first step (a check
that all methods compute the same thing), and ratios.

    nice .venv/bin/python benchmarks/peer_speed.py --setup      # install higher + learn2learn once
    nice .venv/bin/python benchmarks/peer_speed.py              # writes benchmarks/results/peer_speed.json

Installing learn2learn 0.2.0 on Python 3.11 / torch 2.13 (what --setup scripts): it ships only
as source and pins a CUDA torch, so it is installed with --no-deps; its generated C files do not
compile on Python 3.11 (longintrepr.h), so they are regenerated from its .pyx files with Cython 3
and installed with --no-build-isolation. Importing it needs torchvision and gym, which are
stood in for by empty stub modules in the learn2learn worker only (PyPI's torchvision does not
import beside torch 2.13); its MAML touches neither.
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent
DEFAULT_OUT = ROOT / "results" / "peer_speed.json"
MAML_METHODS = ("fewbit", "fewbit-loop", "higher", "learn2learn")
PROTO_METHODS = ("proto-fewbit-5", "proto-plain-5", "proto-fewbit-20", "proto-plain-20")
ALL_METHODS = (*MAML_METHODS, "fewbit-vmap", *PROTO_METHODS)


# ----------------------------------------------------------------------------------------- setup
def setup_peers() -> None:
    """pip-install higher, and learn2learn 0.2.0 from source with regenerated Cython files."""
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "install", "higher", "cython>=3"], check=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                *pip,
                "download",
                "learn2learn==0.2.0",
                "--no-deps",
                "--no-binary",
                ":all:",
                "--no-build-isolation",
                "-d",
                tmp,
            ],
            check=True,
        )
        sdist = next(Path(tmp).glob("learn2learn-*.tar.gz"))
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp, filter="data")
        src = next(p for p in Path(tmp).iterdir() if p.is_dir() and p.name.startswith("learn2learn"))
        for pyx in (src / "learn2learn" / "data").glob("*.pyx"):
            subprocess.run([sys.executable, "-m", "cython", "-3", str(pyx)], check=True)
        subprocess.run([*pip, "install", "--no-deps", "--no-build-isolation", str(src)], check=True)
    print("installed higher and learn2learn; run without --setup to measure", file=sys.stderr)


class _Anything(type):
    """A class whose every attribute is another such class: enough for import-time references."""

    def __getattr__(cls, name: str) -> type:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Anything(name, (), {})

    def __call__(cls, *args: object, **kwargs: object) -> object:
        return object.__new__(cls)


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves empty stand-in packages for the given top-level module names."""

    def __init__(self, names: set[str]) -> None:
        self.names = names

    def find_spec(self, fullname, path, target=None):  # noqa: ANN001, ANN201
        if fullname.split(".")[0] in self.names:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):  # noqa: ANN001, ANN201
        module = types.ModuleType(spec.name)
        module.__path__ = []
        module.__getattr__ = lambda name: _Anything(name, (), {})  # type: ignore[method-assign]
        return module

    def exec_module(self, module) -> None:  # noqa: ANN001
        pass


def import_learn2learn():  # noqa: ANN201
    """learn2learn with stand-ins for torchvision / gym (and requests if absent)."""
    stubs = {"torchvision", "gym"} | {m for m in ("requests",) if importlib.util.find_spec(m) is None}
    sys.meta_path.insert(0, _StubFinder(stubs))
    import learn2learn

    return learn2learn


# ---------------------------------------------------------------------------------- the workload
def make_models(ways: int):  # noqa: ANN201
    """fewbit's Conv-4 and the same network with torch's fused BatchNorm2d (same weights)."""
    import copy

    import torch
    from torch import nn

    from fewbit.models import build_backbone
    from fewbit.models.layers import BatchNorm

    torch.manual_seed(0)
    model = build_backbone("conv4", ways=ways)
    peer = copy.deepcopy(model)
    for block in peer.features:
        for i, layer in enumerate(block):
            if isinstance(layer, BatchNorm):
                bn = nn.BatchNorm2d(layer.channels, eps=layer.eps, track_running_stats=False)
                bn.weight.data.copy_(layer.weight.data)
                bn.bias.data.copy_(layer.bias.data)
                block[i] = bn
    return model, peer


def make_task(tasks: int, ways: int, shots: int, queries: int):  # noqa: ANN201
    """Seeded random 28x28 tasks (timing does not depend on the pixels)."""
    import torch

    from fewbit.data.task import Task

    g = torch.Generator().manual_seed(0)
    sx = torch.rand(tasks, ways * shots, 1, 28, 28, generator=g)
    qx = torch.rand(tasks, ways * queries, 1, 28, 28, generator=g)
    sy = torch.arange(ways).repeat_interleave(shots).expand(tasks, -1).clone()
    qy = torch.arange(ways).repeat_interleave(queries).expand(tasks, -1).clone()
    return Task(sx, sy, qx, qy, ways)


def maml_step_fn(method: str, args: argparse.Namespace):  # noqa: ANN201
    """A closure running one full meta-step (loss, backward, Adam), returning the loss."""
    import torch
    import torch.nn.functional as F

    model, peer = make_models(5)
    task = make_task(args.meta_batch, 5, 1, 15)
    tasks = task.num_tasks

    if method.startswith("fewbit"):
        from fewbit.meta import MetaConfig, build_algorithm

        config = MetaConfig(algorithm="maml", inner_lr=0.4, batched=method != "fewbit-loop", task_chunk=args.task_chunk)
        algo = build_algorithm(config)
        if method == "fewbit-vmap":
            from fewbit.meta import functional, maml

            maml.batched_forward = functional.vmap_forward  # the generic path, forced
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step() -> float:
            opt.zero_grad(set_to_none=True)
            loss = algo.step(model, dict(model.named_parameters()), task).loss
            loss.backward()
            opt.step()
            return float(loss.detach())

        return step

    opt = torch.optim.Adam(peer.parameters(), lr=1e-3)
    if method == "higher":
        import higher

        inner_opt = torch.optim.SGD(peer.parameters(), lr=0.4)

        def step() -> float:
            opt.zero_grad(set_to_none=True)
            total = 0.0
            for t in range(tasks):
                with higher.innerloop_ctx(peer, inner_opt, copy_initial_weights=False) as (fmodel, diffopt):
                    diffopt.step(F.cross_entropy(fmodel(task.support_x[t]), task.support_y[t]))
                    loss = F.cross_entropy(fmodel(task.query_x[t]), task.query_y[t]) / tasks
                    loss.backward()
                    total += float(loss.detach())
            opt.step()
            return total

        return step

    if method == "learn2learn":
        l2l = import_learn2learn()
        maml = l2l.algorithms.MAML(peer, lr=0.4, first_order=False)

        def step() -> float:
            opt.zero_grad(set_to_none=True)
            total = 0.0
            for t in range(tasks):
                learner = maml.clone()
                learner.adapt(F.cross_entropy(learner(task.support_x[t]), task.support_y[t]))
                loss = F.cross_entropy(learner(task.query_x[t]), task.query_y[t]) / tasks
                loss.backward()
                total += float(loss.detach())
            opt.step()
            return total

        return step
    raise SystemExit(f"unknown method {method}")


def proto_step_fn(method: str, args: argparse.Namespace):  # noqa: ANN201
    """One ProtoNet episode: fewbit's algorithm or a plain-PyTorch loop (fused BatchNorm)."""
    import torch
    import torch.nn.functional as F

    ways = int(method.rsplit("-", 1)[1])
    model, peer = make_models(0)
    task = make_task(1, ways, 1, 15)
    if method.startswith("proto-fewbit"):
        from fewbit.meta import MetaConfig, build_algorithm

        algo = build_algorithm(MetaConfig(algorithm="protonet"))
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step() -> float:
            opt.zero_grad(set_to_none=True)
            loss = algo.step(model, dict(model.named_parameters()), task).loss
            loss.backward()
            opt.step()
            return float(loss.detach())

        return step

    opt = torch.optim.Adam(peer.parameters(), lr=1e-3)
    n_support = ways

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        z = peer(torch.cat([task.support_x[0], task.query_x[0]]), embed=True)
        protos = z[:n_support].view(ways, 1, -1).mean(1)
        loss = F.cross_entropy(-torch.cdist(z[n_support:], protos).pow(2), task.query_y[0])
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def count_flops(step) -> int:  # noqa: ANN001
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return int(counter.get_total_flops())


def step_fn(method: str, args: argparse.Namespace):  # noqa: ANN201
    return proto_step_fn(method, args) if method.startswith("proto") else maml_step_fn(method, args)


def memory_worker(method: str, args: argparse.Namespace) -> dict[str, object]:
    """Peak RSS of this process over a few steps of `method` alone, and its first loss."""
    import torch

    torch.set_num_threads(args.threads)
    step = step_fn(method, args)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    first_loss = step()
    step()
    return {
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_step_mb": rss_before,
        "first_loss": first_loss,
    }


def timing_worker(methods: list[str], args: argparse.Namespace) -> dict[str, dict[str, object]]:
    """Round-robin timing of `methods` in one process: the machine's load hits all alike."""
    import torch

    torch.set_num_threads(args.threads)
    steps = {m: step_fn(m, args) for m in methods}
    for _ in range(args.warmup):
        for step in steps.values():
            step()
    wall: dict[str, list[float]] = {m: [] for m in methods}
    cpu: dict[str, list[float]] = {m: [] for m in methods}
    rounds = max(args.steps if not m.startswith("proto") else args.proto_steps for m in methods)
    for r in range(rounds):
        for m, step in steps.items():
            if r >= (args.proto_steps if m.startswith("proto") else args.steps):
                continue
            w, c = time.perf_counter(), time.process_time()
            step()
            wall[m].append(time.perf_counter() - w)
            cpu[m].append(time.process_time() - c)
    out: dict[str, dict[str, object]] = {}
    flops: dict[str, int] = {}
    for m in methods:
        # the arithmetic of the workload, counted on the plain per-task path (the flop counter
        # over-counts grouped convolutions' weight gradients); every method does this much work
        reference = f"proto-plain-{m.rsplit('-', 1)[1]}" if m.startswith("proto") else "fewbit-loop"
        if reference not in flops:
            flops[reference] = count_flops(step_fn(reference, args))
        median = statistics.median(wall[m])
        out[m] = {
            "median_s": median,
            "min_s": min(wall[m]),
            "median_cpu_s": statistics.median(cpu[m]),
            "wall_s": wall[m],
            "flops": flops[reference],
            "gflops_per_s": flops[reference] / median / 1e9,
        }
    return out


# ------------------------------------------------------------------------------------- the driver
def available(method: str) -> str | None:
    """None if `method` can run here, else why not."""
    if method == "higher" and importlib.util.find_spec("higher") is None:
        return "higher is not installed (run with --setup)"
    if method == "learn2learn" and importlib.util.find_spec("learn2learn") is None:
        return "learn2learn is not installed (run with --setup)"
    return None


def run_worker(flag: str, methods: list[str], args: argparse.Namespace) -> dict[str, object]:
    """This script as a subprocess in worker mode; its last stdout line is JSON."""
    cmd = [sys.executable, __file__, flag, *methods, "--threads", str(args.threads), "--steps", str(args.steps)]
    cmd += ["--proto-steps", str(args.proto_steps), "--warmup", str(args.warmup)]
    cmd += ["--meta-batch", str(args.meta_batch), "--task-chunk", str(args.task_chunk)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        return {"error": f"exit {proc.returncode}: {tail[0]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_all(args: argparse.Namespace) -> dict[str, dict[str, object]]:
    results: dict[str, dict[str, object]] = {}
    runnable = []
    for method in args.methods:
        why = available(method)
        if why:
            results[method] = {"method": method, "error": why}
            continue
        print(f"memory: {method} ...", file=sys.stderr, flush=True)
        results[method] = {"method": method, **run_worker("--memory-worker", [method], args)}
        if "error" not in results[method]:
            runnable.append(method)
    print(f"timing, round-robin: {' '.join(runnable)} ...", file=sys.stderr, flush=True)
    timing = run_worker("--timing-worker", runnable, args)
    for method in runnable:
        if "error" in timing:
            results[method]["error"] = timing["error"]
        else:
            results[method].update(timing[method])
    return results


def report(results: dict[str, dict[str, object]], args: argparse.Namespace) -> dict[str, object]:
    ok = {m: r for m, r in results.items() if "error" not in r}
    lines = [f"{'method':<16}{'median s':>10}{'cpu s':>9}{'peak MB':>9}{'GFLOP':>8}{'GFLOP/s':>9}{'loss':>9}"]
    for m, r in results.items():
        if "error" in r:
            lines.append(f"{m:<16}  not run: {r['error']}")
            continue
        lines.append(
            f"{m:<16}{r['median_s']:>10.3f}{r['median_cpu_s']:>9.2f}{r['peak_rss_mb']:>9.0f}"
            f"{r['flops'] / 1e9:>8.1f}{r['gflops_per_s']:>9.1f}{r['first_loss']:>9.4f}"
        )
    ratios: dict[str, float] = {}
    if "fewbit" in ok:
        for peer in ("higher", "learn2learn", "fewbit-loop", "fewbit-vmap"):
            if peer in ok:
                ratios[f"maml_speedup_vs_{peer}"] = ok[peer]["median_s"] / ok["fewbit"]["median_s"]
                ratios[f"maml_memory_ratio_vs_{peer}"] = ok["fewbit"]["peak_rss_mb"] / ok[peer]["peak_rss_mb"]
        peers = [p for p in ("higher", "learn2learn") if p in ok]
        if peers:
            fastest = min(peers, key=lambda p: ok[p]["median_s"])
            ratios["maml_speedup_vs_fastest_peer"] = ok[fastest]["median_s"] / ok["fewbit"]["median_s"]
            ratios["maml_fastest_peer"] = fastest  # type: ignore[assignment]
    for ways in (5, 20):
        a, b = ok.get(f"proto-fewbit-{ways}"), ok.get(f"proto-plain-{ways}")
        if a and b:
            ratios[f"protonet_{ways}way_speedup_vs_plain"] = b["median_s"] / a["median_s"]
    lines += [f"{k}: {v:.2f}" if isinstance(v, float) else f"{k}: {v}" for k, v in ratios.items()]
    print("\n".join(lines))
    import torch

    return {
        "benchmark": "peer_speed",
        "workload": {
            "maml": f"Conv-4 28x28, 5-way 1-shot 15-query, meta-batch {args.meta_batch}, 1 inner step lr 0.4, "
            f"second order, Adam outer step; fewbit task_chunk {args.task_chunk}",
            "protonet": "one episode, 1-shot 15-query, 5-way and 20-way, forward+backward+Adam",
        },
        "threads": args.threads,
        "steps": args.steps,
        "warmup": args.warmup,
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpus": os.cpu_count(),
            "load_avg_at_end": os.getloadavg(),
        },
        "results": results,
        "ratios": ratios,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup", action="store_true", help="install the peers (higher, learn2learn) and exit")
    parser.add_argument("--methods", nargs="+", default=[*MAML_METHODS, *PROTO_METHODS], choices=ALL_METHODS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10, help="timed MAML meta-steps per method (after warm-up)")
    parser.add_argument("--proto-steps", type=int, default=30, help="timed ProtoNet episodes per method")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--meta-batch", type=int, default=32)
    parser.add_argument(
        "--task-chunk", type=int, default=2, help="fewbit's MetaConfig.task_chunk (0: all tasks at once)"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--memory-worker", nargs=1, help=argparse.SUPPRESS)
    parser.add_argument("--timing-worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.setup:
        setup_peers()
        return 0
    if args.memory_worker:
        print(json.dumps(memory_worker(args.memory_worker[0], args)))
        return 0
    if args.timing_worker:
        print(json.dumps(timing_worker(args.timing_worker, args)))
        return 0
    results = run_all(args)
    data = report(results, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
