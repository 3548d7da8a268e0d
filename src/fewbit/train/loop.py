"""meta_train: the outer loop (Adam, schedule, clipping, validation, checkpoints, resume, distributed).

The loop itself is `Trainer._train` and `Trainer._outer_step`; each other concern is a named
collaborator: the run directory (`run_dir.RunDirectory`: lock, metrics, checkpoints, restart),
the trained tensors and their checkpoint form (`state.TrainingState`, resume checks included),
distillation (`teacher.Distillation`) and distributed reduction (`distributed.reduce_outer`).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from fewbit.data.sources import RegressionSource, load_source
from fewbit.device import resolve_device
from fewbit.errors import ConfigError, FewbitError, NotResumableError, TrainingError
from fewbit.evaluation import evaluate
from fewbit.meta import ALGORITHMS, build_algorithm
from fewbit.runtime.preprocess import Preprocessing
from fewbit.train.checkpoint import step_path
from fewbit.train.config import TrainConfig
from fewbit.train.distributed import (
    World,
    all_reduce_sum,
    barrier,
    reduce_outer,
    setup_world,
    shard_bounds,
    shard_task,
    teardown_world,
)
from fewbit.train.run import (
    Run,
    build_model,
    check_model_size,
    checkpoint_progress,
    compress_model_,
    init_weights,
    input_shape_of,
    is_run_dir,
    model_ways,
    read_run_config,
)
from fewbit.train.run_dir import MetricsLog, RunDirectory
from fewbit.train.samplers import task_sampler, training_sampler
from fewbit.train.state import TrainingState, resumable_checkpoint
from fewbit.train.teacher import Distillation, load_teacher

VAL_SEED = 4321  # validation tasks are the same fixed list at every validation


def _same_compression(config: TrainConfig) -> bool:
    """Whether `config.init_from` is a run compressed exactly as `config` is (its masks and quantizer
    steps then carry over with its weights)."""
    return is_run_dir(config.init_from) and read_run_config(config.init_from).compress == config.compress


def meta_train(
    config: TrainConfig,
    out_dir: str | Path,
    *,
    model: nn.Module | None = None,
    progress: bool = True,
    resume: bool = False,
    restart: bool = False,
    on_step: Callable[[dict[str, Any]], None] | None = None,
) -> Run:
    """Meta-train per `config`, writing the run directory `out_dir`; returns the Run at the last step.

        >>> config = TrainConfig.from_dict({"dataset": "glyphs", "algorithm": "protonet", "steps": 300})
        >>> run = meta_train(config, "runs/glyphs")

    `model`: an nn.Module to train in place (e.g. one already compressed) instead of building
    `config.backbone`. `resume=True` continues `out_dir` from its newest good checkpoint (use
    `resume_training` to take the config from the run directory); when the run holds checkpoints
    but none can be resumed it raises NotResumableError and changes nothing, unless `restart=True`,
    which trains it again from step 0 after moving its checkpoints and metrics into
    `out_dir/restarted-<time>/`. The run directory is locked while training (InUseError for a
    second writer). Under `torchrun` the tasks of each meta-batch are split across ranks and only
    rank 0 writes. `on_step(record)` is called after every training step with its metrics line
    (step, loss, accuracy, lr, time), before validation and checkpointing.
    """
    device = resolve_device(config.device)
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))  # one GPU per torchrun process
        torch.cuda.set_device(device)
    world = setup_world(device)
    try:
        return Trainer(config, Path(out_dir), model, device, world, progress, on_step).train(resume, restart)
    finally:
        teardown_world(world)


def resume_training(run_dir: str | Path, *, steps: int | None = None, progress: bool = True,
                    device: str | None = None, restart: bool = False,
                    on_step: Callable[[dict[str, Any]], None] | None = None) -> Run:
    """Continue the run in `run_dir` from its newest good checkpoint, optionally to a new `steps`.

    `restart=True` trains it again from step 0 with its own config, keeping the old checkpoints
    and metrics in `run_dir/restarted-<time>/` (see `meta_train`).
    """
    config = read_run_config(run_dir)
    changes = {k: v for k, v in (("steps", steps), ("device", device)) if v is not None}
    config = config.replace(**changes)
    return meta_train(config, run_dir, progress=progress, resume=True, restart=restart, on_step=on_step)


class Trainer:
    """One training run: set up from its config, then `train` (new or resumed) to `config.steps`."""

    def __init__(
        self, config: TrainConfig, out_dir: Path, model: nn.Module | None, device: torch.device, world: World,
        progress: bool, on_step: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.config, self.device, self.world, self.on_step = config, device, world, on_step
        self.progress = progress and world.is_main
        self.dir = RunDirectory(out_dir)
        if world.distributed and config.meta_batch < world.size:
            raise ConfigError(
                f"TrainConfig.meta_batch: {config.meta_batch} tasks cannot be split over {world.size} ranks"
            )
        torch.manual_seed(config.seed)  # model initialisation
        self.episodic = ALGORITHMS[config.meta.algorithm].episodic
        hint = config.data.input_shape_hint()
        if model is None and hint is not None:  # an input the backbone pools away fails before the data loads
            check_model_size(config, 1, hint)
        self._load_data()
        # The samplers check the task shape against the data before the model is built: a request
        # for more classes than the data has must fail without allocating a head for them.
        sample_gen = torch.Generator().manual_seed(config.seed)
        self.sampler: Any = training_sampler(config, self.train_ds, episodic=self.episodic, generator=sample_gen)
        if config.val_every > 0 and (self.val_ds is not None or config.regression):
            # fail early (not at the first validation) when the val split is too small for the task shape
            task_sampler(self.val_ds, ways=config.ways, shots=config.shots, queries=config.queries,
                         rotations=False, generator=torch.Generator())
        self.head_ways = model_ways(config, self.episodic, self.train_classes)
        start_weights = bool(config.init_from)
        if model is None and config.init_from and config.compress and not _same_compression(config):
            # compressed from the start run's weights, not from a random initialisation: pruning masks
            # and quantizer steps are worked out from the weights they compress (a run of the same
            # compression instead gives its own masks and steps, below)
            model = build_model(config.replace(compress=None), self.head_ways,
                                input_shape_of(config, self.preprocessing))
            init_weights(model, config.init_from)
            compress_model_(model, config.compress)
            start_weights = False
        elif model is None:
            model = build_model(config, self.head_ways, input_shape_of(config, self.preprocessing))
        self.model = model.to(device)
        if start_weights:
            init_weights(self.model, config.init_from)
        self.algorithm = build_algorithm(config.meta, model=self.model)
        self.distill = self._distillation()
        self.state = TrainingState(self.model, dict(self.algorithm.extra_parameters(self.model)), config.outer_lr,
                                   sample_gen, device)
        self.step = 0
        self.best: dict[str, Any] | None = None
        self.last_good: Path | None = None

    # -- set-up ---------------------------------------------------------------------------------

    def _load_data(self) -> None:
        config = self.config
        source = load_source(config.dataset, options=config.data, progress=self.progress)
        self.preprocessing: Preprocessing | None = None
        if not isinstance(source, RegressionSource):
            self.train_ds = source.split(config.train_on)
            # train+val leaves no unseen classes to validate on (its config has val_every 0)
            self.val_ds = source.split("val") if config.train_on == "train" else None
            self.preprocessing = source.preprocessing
            self.train_classes: int | None = self.train_ds.num_classes * (4 if config.rotations else 1)
        else:
            if config.resolved_backbone != "mlp":
                raise ConfigError(
                    f"TrainConfig.backbone: {config.dataset} is a regression source; it needs the mlp backbone, "
                    f"got {config.resolved_backbone!r}"
                )
            self.train_ds = self.val_ds = None
            self.train_classes = None
        if not self.episodic and self.train_ds is None:
            raise ConfigError(f"TrainConfig.meta: {self.config.algorithm} trains on labelled images, not on regression")

    def _distillation(self) -> Distillation | None:
        config = self.config
        if config.teacher is None:
            return None
        if self.episodic:
            raise ConfigError(f"TrainConfig.teacher: {config.algorithm} is episodic; distillation from a teacher "
                              "needs a supervised algorithm (finetune)")
        teacher = load_teacher(config.teacher, classes=self.head_ways, preprocessing=self.preprocessing,
                               input_shape=input_shape_of(config, self.preprocessing), device=self.device,
                               student_dir=self.dir.path)
        return Distillation(teacher, config.teacher_weight, config.teacher_temperature)

    # -- the loop -------------------------------------------------------------------------------

    def train(self, resume: bool, restart: bool = False) -> Run:
        lock: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        if self.world.is_main:
            self.dir.create(resume)
            lock = self.dir.lock()
        with lock:
            if self.world.is_main:
                self.dir.prepare(resume, self.config)
            barrier(self.world)
            if resume:
                self._restore(restart)
                if self.world.is_main:
                    self.dir.write_config(self.config)  # only now: a refused resume changes nothing
            return self._train()

    def _train(self) -> Run:
        config, main = self.config, self.world.is_main
        metrics = self.dir.metrics() if main else None
        bar = tqdm(total=config.steps, initial=self.step, desc=f"train {config.algorithm}", disable=not self.progress,
                   dynamic_ncols=True)
        start_time = time.perf_counter()
        self.stopped = self._stop_reason(self.step)  # a resumed run that had stopped stays stopped
        try:
            while self.step < config.steps and self.stopped is None:
                step = self.step + 1
                snapshot = self.state.rng()
                loss, accuracy = self._outer_step(step, snapshot)
                self.step = step
                record: dict[str, Any] = {"step": step, "kind": "train", "loss": loss, "lr": self._lr(step)}
                if accuracy is not None:
                    record["accuracy"] = accuracy
                record["time"] = round(time.perf_counter() - start_time, 3)
                _append(metrics, record, step)
                if self.on_step is not None:
                    self.on_step(record)
                postfix = {"loss": f"{loss:.4f}"} | ({"acc": f"{accuracy:.3f}"} if accuracy is not None else {})
                if self._due(step, config.val_every) and main:  # other ranks need no best
                    val = self._validate(step)
                    _append(metrics, val, step)
                    postfix["val"] = f"{val['value']:.3f}"
                    self.stopped = self._stop_reason(step)
                if self._due(step, config.val_every) and config.patience and self.world.distributed:
                    self.stopped = self._agree_to_stop(self.stopped)  # only rank 0 validates
                if self._due(step, config.checkpoint_every):
                    self._save_step()
                bar.set_postfix(postfix, refresh=False)
                bar.update(1)
            if main and (self.best is None or self.best.get("value") is None):
                self.best = {"step": self.step, "metric": None, "value": None}  # no validation: the last is best
                self.dir.save_best(self.state.weights(), self._checkpoint_state())
            if main and not self.dir.has_step(self.step):
                self._save_step()  # the last step is always resumable, whatever checkpoint_every says
        finally:
            bar.close()
            if metrics is not None:
                metrics.close()
        barrier(self.world)
        return Run(config, self.model, self.algorithm, self.state.extras, self.dir.path, self.step, self.best,
                   self.preprocessing, stopped=self.stopped)

    def _stop_reason(self, step: int) -> str | None:
        """Why training stops early at `step`, just validated (None: it goes on): `patience`
        validations in a row after the best did not beat it. Counted from the best's step, so a
        resumed run counts as the uninterrupted one would."""
        config, best = self.config, self.best
        if not config.patience or not config.val_every or best is None or best.get("value") is None:
            return None
        if step % config.val_every and step != config.steps:
            return None
        stale = (step - int(best["step"])) // config.val_every
        if stale < config.patience:
            return None
        shown = f"{100 * best['value']:.2f}%" if best["metric"] == "accuracy" else f"{best['value']:.4f}"
        return (f"stopped at step {step} of at most {config.steps}: {stale} validations in a row did not beat "
                f"the best, val {best['metric']} {shown} at step {best['step']} (its checkpoint is kept)")

    def _agree_to_stop(self, reason: str | None) -> str | None:
        """Rank 0's decision to stop, on every rank (one small all-reduce at a validation step)."""
        flag = torch.tensor([1.0 if reason else 0.0], device=self.device)
        (total,) = all_reduce_sum([flag], self.world)
        return reason or ("stopped early on rank 0's validation" if float(total) > 0 else None)

    def _outer_step(self, step: int, snapshot: dict[str, torch.Tensor]) -> tuple[float, float | None]:
        config, world, state = self.config, self.world, self.state
        for group in state.optimizer.param_groups:
            group["lr"] = self._lr(step)
        params = dict(self.model.named_parameters())
        if self.episodic:
            task = self.sampler.sample(config.meta_batch)  # every rank draws the same global meta-batch
            local = shard_task(task, world).to(self.device)
            share = local.num_tasks / config.meta_batch
            out = self.algorithm.step(self.model, params, local, state.extras, outer_step=step)
        else:
            x, y = self.sampler.sample()
            start, stop = shard_bounds(x.shape[0], world)
            x, y = x[start:stop].to(self.device), y[start:stop].to(self.device)
            share = (stop - start) / config.batch_size
            out = self.algorithm.step_supervised(self.model, params, x, y, state.extras)
            if self.distill is not None:
                out = self.distill(out, x)
        state.optimizer.zero_grad(set_to_none=True)
        scale = share if world.distributed else 1.0
        if out.grads is None:
            (out.loss * scale).backward()
        else:  # e.g. Reptile: the algorithm gives the outer gradient itself
            for name, p in state.named:
                g = out.grads.get(name.split("/", 1)[1])
                p.grad = None if g is None else (g.detach() * scale if world.distributed else g.detach().clone())
        accuracy = out.accuracy
        if accuracy is not None:
            accuracy = accuracy.detach().float() if torch.is_tensor(accuracy) else torch.tensor(float(accuracy))
        loss, accuracy = reduce_outer(state.named, out.loss.detach().float(), accuracy, share, world)
        loss_value = float(loss)
        if not math.isfinite(loss_value) or not self._grads_finite():
            what = f"the loss is {loss_value}" if not math.isfinite(loss_value) else "a gradient is not finite"
            self._stop_not_finite(step, what, snapshot)
        if config.grad_clip is not None:
            nn.utils.clip_grad_norm_(state.parameters, config.grad_clip)
        state.optimizer.step()
        return loss_value, (float(accuracy) if accuracy is not None else None)

    def _due(self, step: int, every: int) -> bool:
        return bool(every) and (step % every == 0 or step == self.config.steps)

    def _lr(self, step: int) -> float:
        if self.config.schedule == "cosine":
            return self.config.outer_lr * 0.5 * (1.0 + math.cos(math.pi * (step - 1) / max(1, self.config.steps)))
        return self.config.outer_lr

    def _grads_finite(self) -> bool:
        norms = [p.grad.detach().abs().max() for _, p in self.state.named if p.grad is not None and p.grad.numel()]
        return not norms or bool(torch.isfinite(torch.stack(norms)).all())

    def _stop_not_finite(self, step: int, what: str, snapshot: dict[str, torch.Tensor]) -> None:
        # The weights and optimizer still hold step-1's good state: keep it as a checkpoint.
        kept = self.last_good
        if self.world.is_main and self.step > 0 and (kept is None or kept != self._step_path()):
            with contextlib.suppress(FewbitError):
                kept = self._save_step(rng=snapshot)
        where = f"the last good checkpoint is {kept}" if kept else "no checkpoint was written yet"
        raise TrainingError(
            f"step {step}: {what}; training stopped and {where}. Lower --outer-lr or --inner-lr, or set grad_clip"
        )

    # -- validation -----------------------------------------------------------------------------

    def _validate(self, step: int) -> dict[str, Any]:
        config = self.config
        run = Run(config, self.model, self.algorithm, self.state.extras, self.dir.path, step, None,
                  self.preprocessing)
        # forked RNG: validating never changes the training stream (so val_every cannot change the weights)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            result = evaluate(
                run.predictor(), self.val_ds, ways=config.ways, shots=config.shots, queries=config.queries,
                tasks=config.val_tasks, seed=VAL_SEED, device=self.device,
            )
        value = result.value
        better = (
            self.best is None or self.best.get("value") is None
            or (value > self.best["value"] if result.metric == "accuracy" else value < self.best["value"])
        )
        if better and math.isfinite(value):
            self.best = {"step": step, "metric": result.metric, "value": value}
            if self.world.is_main:
                self.dir.save_best(self.state.weights(), self._checkpoint_state())
        return {"step": step, "kind": "val", "metric": result.metric, "value": value, "ci95": result.ci95,
                "best": self.best["value"] if self.best else None}

    # -- checkpoints and resume -------------------------------------------------------------------

    def _checkpoint_state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "config": self.config.to_dict(),
            "model_ways": self.head_ways,
            "algorithm": self.config.algorithm,
            "best": self.best,
            "world_size": self.world.size,
            "preprocessing": None if self.preprocessing is None else self.preprocessing.to_dict(),
        }

    def _step_path(self) -> Path:
        return step_path(self.dir.checkpoints, self.step)

    def _save_step(self, rng: dict[str, torch.Tensor] | None = None) -> Path | None:
        if not self.world.is_main:
            return None
        tensors, groups = self.state.resumable(rng)
        state = {**self._checkpoint_state(), "optim_groups": groups}
        self.last_good = self.dir.save_step(self.step, tensors, state, self.config.keep_checkpoints)
        return self.last_good

    def _restore(self, restart: bool) -> None:
        """Load the newest checkpoint that can be resumed; never throw away what the run holds."""
        if restart:
            self._start_over("--restart")
            return
        found, skipped = resumable_checkpoint(self.dir.checkpoints, self.config, self.state)
        if found is None:
            held = self.dir.held_checkpoints()
            if held:
                raise NotResumableError(
                    f"--resume: {self.dir.path} holds {', '.join(held[:4])}{', ...' if len(held) > 4 else ''} "
                    f"but no step checkpoint that can be resumed ({'; '.join(skipped)[:300] or 'none verifies'}); "
                    f"nothing was changed. To train it again from step 0, keeping the old files, add --restart"
                )
            self._start_over("no checkpoint was written before the run stopped")
            return
        if self.world.is_main:
            for reason in skipped:
                warnings.warn(f"{reason}; falling back to the previous checkpoint", stacklevel=4)
        self.state.load(found)
        self.step, self.best = checkpoint_progress(found)
        self.last_good = found.path  # not a damaged newer one
        if self.world.is_main:
            self.dir.truncate_metrics(self.step)

    def _start_over(self, reason: str) -> None:
        """Train from step 0: what the run holds moves into `restarted-<time>/` (nothing is deleted)."""
        if self.world.is_main:
            self.dir.start_over(reason)
        self.step, self.best = 0, None


def _append(metrics: MetricsLog | None, record: dict[str, Any], step: int) -> None:
    """Append one metrics line (rank 0 only)."""
    if metrics is not None:
        metrics.append(record, step)
