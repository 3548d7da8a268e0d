"""`search`: the best few-shot model in N bytes.

1. Start: the run given (`from_run`), or a float run trained for `pilot_steps` (`OUT/pilot`).
2. Bytes: every layer's payload at every option, packed (`sizing`), plus the manifest of a
   reference plan; every plan reported is packed whole, in memory, and its exact size kept.
3. Sensitivity: every layer at every option, alone, on `episodes` seeded meta-training tasks
   (`sensitivity`): the increase of the query loss.
4. Choice: the `top_k` plans of least summed loss increase that fit (`knapsack`), exact bytes
   checked; each trained `rerank_steps` with its compression active and scored on
   `rerank_tasks` validation tasks; the most accurate wins (validation chooses, never test).
5. The winner's spec (an ordinary per-layer spec string) is trained for `train.steps` from the
   start's weights (`OUT/<budget>/run`, a run like any other), exported (`OUT/<budget>/model.fewbit`)
   and its file's size checked against the budget; `OUT/search.json` records everything.

A search keeps what it has done in OUT as it goes (`search-config.json` first, then the tables in
`tables.json`, then each training as a run directory), so an interrupted search continues with
`resume=True` (`fewbit search --resume`): the tables are read back, finished trainings kept,
unfinished ones resumed from their checkpoints; the same config and start run are required.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fewbit._io import atomic_write_json
from fewbit.data.sources import load_source
from fewbit.deploy.torch_export import export
from fewbit.errors import ConfigError
from fewbit.evaluation import DEFAULT_EVAL_SEED, eval_tasks, evaluate
from fewbit.meta import ALGORITHMS, build_algorithm
from fewbit.search.config import SearchConfig
from fewbit.search.knapsack import best_choices
from fewbit.search.plan import LayerOption, uniform_plan
from fewbit.search.sensitivity import fisher_increase, loss_increase
from fewbit.search.sizing import ArtifactSizer
from fewbit.train import load_run, meta_train
from fewbit.train.run import build_model, init_weights, input_shape_of, is_run_dir, model_ways

RESULT_NAME = "search.json"
CONFIG_NAME = "search-config.json"  # what the search in OUT is: written before any work
TABLES_NAME = "tables.json"  # per-layer bytes and sensitivity: the costly part, kept for --resume
SENSITIVITY_SEED = 1234  # the meta-training tasks the sensitivity is measured on
RERANK_SEED = 4321  # the validation tasks candidates are scored on
SENSITIVITY_METHODS = {
    "measured": "measured: the query cross-entropy increase on the episodes, one layer at a time",
    "fisher": "estimated: mean gradient and empirical Fisher diagonal times each option's weight perturbation",
}
OVERHEAD_SAMPLES = 16  # random plans whose manifests bound the knapsack's overhead


@dataclasses.dataclass(frozen=True)
class BudgetResult:
    """One budget's outcome: the winner and every candidate (`to_dict()` is the JSON contract)."""

    budget: int
    spec: str
    bytes: int
    artifact: str
    run_dir: str
    accuracy: float | None
    ci95: float | None
    scored_on: str
    candidates: tuple[dict[str, Any], ...]
    uniform: tuple[dict[str, Any], ...] = ()  # the uniform plans that fit, trained alike (config.uniform)
    choose_seconds: float = 0.0  # knapsack + exact bytes + re-ranking (short trainings and their scoring)
    train_seconds: float = 0.0  # the winner's training, export and scoring

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"candidates": list(self.candidates), "uniform": list(self.uniform)}


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """Every budget's result, the per-layer tables, and (frontier) the uniform plans' points."""

    results: tuple[BudgetResult, ...]
    layers: tuple[str, ...]
    options: tuple[str, ...]
    out: str
    seconds: float
    uniform: tuple[dict[str, Any], ...] = ()
    plot: str | None = None
    start_seconds: float = 0.0  # the pilot run, when there is one
    tables_seconds: float = 0.0  # per-layer bytes and episode sensitivity, shared by every budget

    def to_dict(self) -> dict[str, Any]:
        """The first budget's `spec`, `bytes`, `artifact`, `candidates` at the top; every budget under `results`."""
        first = self.results[0].to_dict()
        return {**first, "results": [r.to_dict() for r in self.results], "layers": list(self.layers),
                "options": list(self.options), "uniform": list(self.uniform), "plot": self.plot, "out": self.out,
                "seconds": round(self.seconds, 1), "start_seconds": round(self.start_seconds, 1),
                "tables_seconds": round(self.tables_seconds, 1)}


def search(config: SearchConfig, out_dir: str | Path, *, from_run: str | Path | None = None,
           progress: bool = False, log: Callable[[str], None] | None = None, resume: bool = False) -> SearchResult:
    """Find, train and export the most accurate plan of per-layer bits and sparsity within each budget.

        >>> cfg = SearchConfig.from_dict({"budget": "24K", "train": {"dataset": "glyphs", "algorithm": "protonet",
        ...                                                         "steps": 300}})
        >>> result = search(cfg, "runs/search-24k", from_run="runs/glyphs-float")
        >>> result.results[0].spec, result.results[0].bytes   # a per-layer spec string, the file's size

    `from_run`: a run whose weights start every candidate (its own compression is dropped; the
    final training fine-tunes from them). Without it a float run of `pilot_steps` is trained first.
    `resume`: continue the search of the same config and start run in `out_dir` (the module
    docstring); its times are this call's. ConfigError, before any training, when no plan fits a
    budget, when `out_dir` holds files and `resume` is off, or when it holds another search.
    """
    started = time.perf_counter()
    say = log or (lambda _: None)
    out = Path(out_dir)
    identity = _identity(config, from_run)
    _claim(out, identity, resume)
    train = config.train
    torch.manual_seed(config.seed)
    source = load_source(train.dataset, options=train.data, progress=progress)
    train_ds, val_ds = source.split("train"), source.split("val")
    preprocessing = source.preprocessing
    episodic = ALGORITHMS[train.algorithm].episodic
    ways = model_ways(train, episodic, train_ds.num_classes * (4 if train.rotations else 1))
    base = build_model(train.replace(compress=None), ways, input_shape_of(train, preprocessing))
    base.eval()

    def algorithm_for(model: nn.Module) -> Any:
        return build_algorithm(train.meta, model=model)

    algorithm = algorithm_for(base)
    extras = dict(algorithm.extra_parameters(base))
    prep = preprocessing.to_dict() if preprocessing is not None else None
    options = config.options()

    def sizer_for(step: int) -> ArtifactSizer:
        return ArtifactSizer(base, act_bits=config.act_bits, lsq=config.lsq, step=step, algorithm=algorithm,
                             extras=extras, preprocessing=prep)

    def smallest_plan(sizer: ArtifactSizer, layers: list[str]) -> tuple[dict[str, LayerOption], int]:
        plan = {layer: min(options, key=lambda o: sizer.layer_cost(layer, o)) for layer in layers}
        return plan, sizer.plan_bytes(plan)

    def check_budgets(sizer: ArtifactSizer, layers: list[str]) -> tuple[dict[str, LayerOption], int]:
        plan, nbytes = smallest_plan(sizer, layers)
        for budget in config.budgets:
            if nbytes + config.slack > budget:
                raise ConfigError(f"search: budget {budget:,} B is smaller than the smallest plan "
                                  f"({nbytes:,} B + {config.slack} B of slack: {sizer.spec(plan)})")
        return plan, nbytes

    start = Path(from_run) if from_run is not None else None
    clock = time.perf_counter()
    if start is None:
        # before any training: the smallest plan of the freshly initialised model (only its masks'
        # coding and the manifest's checksum change with training) must fit every budget
        initial = sizer_for(train.steps)
        check_budgets(initial, initial.layers())
        say(f"training a float pilot run for {config.pilot_steps} steps")
        pilot = train.replace(compress=None, steps=config.pilot_steps, init_from=None)
        start = out / "pilot"
        _meta_train(pilot, start, resume, progress=progress)
    init_weights(base, start)
    start_seconds = time.perf_counter() - clock
    clock = time.perf_counter()
    sizer = sizer_for(train.steps)
    layers = sizer.layers()
    if not layers:
        raise ConfigError("search: the model stores no Linear/Conv2d layer to compress")
    spec_of = sizer.spec

    smallest, smallest_bytes = check_budgets(sizer, layers)
    kept = _read_tables(out, layers, len(options)) if resume else None
    if kept is not None:
        say(f"read the tables of {len(layers)} layers x {len(options)} options back from {out / TABLES_NAME}")
        costs, sensitivity, overhead = kept
    else:
        # bytes: per-layer payload costs (exact, additive)
        costs = {layer: [sizer.layer_cost(layer, o) for o in options] for layer in layers}
        # The manifest (deflated, naming every item of the spec) grows with a plan's variety: take the
        # largest of the smallest plan's and of seeded random plans', so estimates rarely undershoot;
        # every plan kept is packed whole anyway.
        pick = torch.Generator().manual_seed(config.seed)
        mixed = [{layer: options[int(torch.randint(len(options), (1,), generator=pick))] for layer in layers}
                 for _ in range(OVERHEAD_SAMPLES)]
        overhead = max(sizer.overhead(plan) for plan in [smallest, *mixed])

        # sensitivity on seeded meta-training tasks
        say(f"measuring {len(layers)} layers x {len(options)} options on {config.episodes} training tasks")
        tasks = list(eval_tasks(train_ds, ways=train.ways, shots=train.shots, queries=train.queries,
                                tasks=config.episodes, seed=SENSITIVITY_SEED + config.seed,
                                batch=config.episode_batch))
        if config.sensitivity == "fisher":
            sensitivity = fisher_increase(sizer.compressed, base, {layer: options for layer in layers}, algorithm,
                                          tasks, extras)
        else:
            sensitivity = loss_increase(sizer.compressed, base, {layer: options for layer in layers}, algorithm_for,
                                        tasks, extras)
        atomic_write_json(out / TABLES_NAME, {"layers": layers, "costs": costs, "sensitivity": sensitivity,
                                              "overhead": overhead})

    tables_seconds = time.perf_counter() - clock

    def score(model: nn.Module, split_ds: Any, tasks_count: int, seed: int) -> Any:
        algo = algorithm_for(model)
        params = dict(model.named_parameters())
        return evaluate(lambda task: algo.predict(model, params, task, extras).detach(), split_ds,
                        ways=train.ways, shots=train.shots, queries=train.queries, tasks=tasks_count, seed=seed)

    def trained(plan: dict[str, LayerOption], steps: int, where: Path) -> nn.Module:
        spec = spec_of(plan)
        model = sizer.compressed(plan)
        if steps > 0:
            cfg = train.replace(compress=spec, steps=steps, init_from=None, val_every=0,
                                checkpoint_every=max(steps, 1))
            _meta_train(cfg, where, resume, model=model)
        return model

    results = []
    trained_uniform: dict[str, dict[str, Any]] = {}
    for budget in config.budgets:
        label = f"{budget}"
        clock = time.perf_counter()
        say(f"budget {budget:,} B: knapsack over {len(layers)} layers")
        floor = {layer: min(costs[layer]) for layer in layers}
        fixed = overhead + (sizer.float_payload + sum(floor.values()))
        capacity = budget - config.slack - fixed
        shifted = [[c - floor[layer] for c in costs[layer]] for layer in layers]
        choices = best_choices(shifted, [sensitivity[layer] for layer in layers], capacity, 4 * config.top_k)
        candidates: list[dict[str, Any]] = []
        for choice in choices:
            plan = {layer: options[i] for layer, i in zip(layers, choice.picks, strict=True)}
            exact = sizer.plan_bytes(plan)
            if exact + config.slack > budget:
                continue  # the manifest came out larger than the reference's: the next plan
            candidates.append({"spec": spec_of(plan), "plan": {n: o.label for n, o in plan.items()},
                               "estimated_loss_increase": choice.value, "estimated_bytes": fixed + choice.cost,
                               "bytes": exact, "_plan": plan})
            if len(candidates) == config.top_k:
                break
        if not candidates:
            raise ConfigError(f"search: no plan fits {budget:,} B; the smallest is {smallest_bytes:,} B")
        for i, cand in enumerate(candidates):
            say(f"budget {budget:,} B: candidate {i + 1}/{len(candidates)} ({cand['bytes']:,} B): {cand['spec']}")
            model = trained(cand["_plan"], config.rerank_steps, out / label / "candidates" / f"{i}")
            result = score(model, val_ds, config.rerank_tasks, RERANK_SEED + config.seed)
            cand["val_accuracy"], cand["val_ci95"] = result.value, result.ci95
        winner = max(candidates, key=lambda c: c["val_accuracy"])
        choose_seconds, clock = time.perf_counter() - clock, time.perf_counter()
        final = _final(config, budget, winner["_plan"], winner["spec"], out / label, sizer, score, val_ds, source,
                       say, resume)
        train_seconds = time.perf_counter() - clock
        for cand in candidates:
            cand.pop("_plan")
            cand["chosen"] = cand is winner
        uniform = ()
        if config.uniform:
            uniform = tuple(_uniform(config, budget, layers, options, sensitivity, sizer, score, val_ds, source, out,
                                     say, trained_uniform, resume))
        results.append(BudgetResult(budget=budget, candidates=tuple(candidates), uniform=uniform,
                                    choose_seconds=round(choose_seconds, 1), train_seconds=round(train_seconds, 1),
                                    **final))
    uniform_rows = list({row["spec"]: row for r in results for row in r.uniform}.values())
    plot = None
    if len(config.budgets) > 1 or uniform_rows:
        plot = str(_plot(results, uniform_rows, out / "frontier.png"))
    outcome = SearchResult(tuple(results), tuple(layers), tuple(o.label for o in options), str(out),
                           time.perf_counter() - started, tuple(uniform_rows), plot, start_seconds, tables_seconds)
    record = outcome.to_dict() | {"config": config.to_dict(), "from_run": str(from_run) if from_run else None,
                                  "sensitivity": {layer: dict(zip((o.label for o in options), sensitivity[layer],
                                                                  strict=True)) for layer in layers},
                                  "layer_bytes": {layer: dict(zip((o.label for o in options), costs[layer],
                                                                  strict=True)) for layer in layers},
                                  "sensitivity_method": SENSITIVITY_METHODS[config.sensitivity]}
    atomic_write_json(out / RESULT_NAME, json.loads(json.dumps(record, default=str)))
    return outcome


def _final(config: SearchConfig, budget: int, plan: dict[str, LayerOption], spec: str, where: Path,
           sizer: ArtifactSizer, score: Callable[..., Any], val_ds: Any, source: Any,
           say: Callable[[str], None], resume: bool = False) -> dict[str, Any]:
    """Train the plan to the end, export it, check its bytes, score it."""
    train = config.train
    say(f"training {spec} for {train.steps} steps")
    run_dir = where / "run"
    model = sizer.compressed(plan)
    _meta_train(train.replace(compress=spec, init_from=None), run_dir, resume, model=model)
    run = load_run(run_dir, checkpoint="best", device="cpu")
    artifact = where / "model.fewbit"
    info = export(run.model, artifact, **run.export_args())
    if info["bytes"] > budget:  # what training changed in the file outgrew the slack: never shipped as fitting
        raise ConfigError(f"search: the trained model's file is {info['bytes']:,} B, over the budget of {budget:,} B; "
                          f"raise slack above {config.slack} B")
    if config.eval_tasks:
        result, scored_on = score(run.model, source.split("test"), config.eval_tasks, DEFAULT_EVAL_SEED), "test"
    else:
        result, scored_on = score(run.model, val_ds, config.rerank_tasks, RERANK_SEED + config.seed), "val"
    return {"spec": spec, "bytes": int(info["bytes"]), "artifact": str(artifact), "run_dir": str(run_dir),
            "accuracy": result.value, "ci95": result.ci95, "scored_on": scored_on}


def _uniform(config: SearchConfig, budget: int, layers: list[str], options: list[LayerOption],
             sensitivity: dict[str, list[float]], sizer: ArtifactSizer, score: Callable[..., Any], val_ds: Any,
             source: Any, out: Path, say: Callable[[str], None],
             done: dict[str, dict[str, Any]], resume: bool = False) -> list[dict[str, Any]]:
    """The `config.uniform` uniform plans (one option on every layer) that fit `budget` with the least
    estimated loss increase, each trained and scored as the winner is (`done` caches them by spec)."""
    fitting = []
    for i, option in enumerate(options):
        plan = uniform_plan(layers, option)
        nbytes = sizer.plan_bytes(plan)
        if nbytes + config.slack <= budget:
            fitting.append((sum(sensitivity[layer][i] for layer in layers), option, plan))
    rows = []
    for estimate, option, plan in sorted(fitting, key=lambda t: t[0])[: config.uniform]:
        spec = sizer.spec(plan)
        if spec not in done:
            where = out / "uniform" / option.label.replace(" ", "-").replace("%", "")
            say(f"uniform {option.label}: training {config.train.steps} steps")
            row = _final(config, budget, plan, spec, where, sizer, score, val_ds, source, say, resume)
            done[spec] = row | {"label": option.label, "estimated_loss_increase": estimate}
        rows.append(done[spec])
    return rows


def _identity(config: SearchConfig, from_run: str | Path | None) -> dict[str, Any]:
    """What a search is, as its records hold it (JSON values): its config and its start run."""
    return {"config": json.loads(json.dumps(config.to_dict(), default=str)),
            "from_run": str(from_run) if from_run is not None else None}


def finished_search(out_dir: str | Path, config: SearchConfig, from_run: str | Path | None) -> dict[str, Any] | None:
    """The record (`search.json`) of the finished search of `config` from `from_run` in `out_dir`;
    None when `out_dir` holds no finished search; ConfigError when it holds another one."""
    path = Path(out_dir) / RESULT_NAME
    if not path.is_file():
        return None
    record = json.loads(path.read_text(encoding="utf-8"))
    if {"config": record.get("config"), "from_run": record.get("from_run")} != _identity(config, from_run):
        raise ConfigError(f"--out: {out_dir} holds a search of another config or start run; pick another --out")
    return record


def _claim(out: Path, identity: dict[str, Any], resume: bool) -> None:
    """Make `out` this search's folder: a new one (absent or empty) records what the search is;
    `resume` requires the record of the same search. ConfigError, changing nothing, otherwise."""
    record = out / CONFIG_NAME
    if resume:
        if not record.is_file():
            raise ConfigError(f"--resume: {out} holds no search to continue (no {CONFIG_NAME}); start one without "
                              "--resume")
        try:
            kept = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            raise ConfigError(f"--resume: {record} is unreadable; start the search again in another --out") from None
        if kept != identity:
            what = "start run" if isinstance(kept, dict) and kept.get("config") == identity["config"] else "config"
            raise ConfigError(f"--resume: {out} holds a search of another {what}; give the same settings "
                              "(its search-config.json) or another --out")
        return
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        hint = "continue it with --resume" if record.is_file() else "pick an empty or new folder"
        raise ConfigError(f"--out: {out} is not an empty folder; {hint} (nothing was changed)")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(record, identity)


def _read_tables(out: Path, layers: list[str], n_options: int) -> tuple[dict[str, list[int]], dict[str, list[float]],
                                                                        int] | None:
    """(costs, sensitivity, overhead) kept in `out` by the same search, or None when not (yet) written.
    ConfigError when the file does not describe these layers and options."""
    path = out / TABLES_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        costs = {layer: [int(c) for c in data["costs"][layer]] for layer in layers}
        sensitivity = {layer: [float(v) for v in data["sensitivity"][layer]] for layer in layers}
        overhead = int(data["overhead"])
        ok = data["layers"] == layers and all(len(costs[k]) == len(sensitivity[k]) == n_options for k in layers)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise ConfigError(f"--resume: {path} does not hold this search's tables; remove it to measure them again")
    return costs, sensitivity, overhead


def _meta_train(config: Any, where: Path, resume: bool, **kwargs: Any) -> Any:
    """`meta_train` into `where`; with `resume`, a run already there is continued (a finished one
    is returned as it is)."""
    kwargs.setdefault("progress", False)
    return meta_train(config, where, resume=resume and is_run_dir(where), **kwargs)


def _plot(results: list[BudgetResult], uniform: list[dict[str, Any]], path: Path) -> Path:
    from fewbit.report.pareto import plot_pareto

    rows = [{"algorithm": "searched", "bytes": r.bytes, "accuracy": r.accuracy, "ci95": r.ci95,
             "label": f"{r.budget // 1024}K" if r.budget % 1024 == 0 else f"{r.budget}"} for r in results]
    rows += [{"algorithm": "uniform", **u} for u in uniform]  # each has its label
    return plot_pareto(rows, path, title="searched per-layer plans vs uniform plans (accuracy vs file bytes)")
