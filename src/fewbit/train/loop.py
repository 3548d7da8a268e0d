"""meta_train: the outer loop (Adam, schedule, clipping, validation, checkpoints, resume, distributed)."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import json
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

from fewbit._io import atomic_write_text, finite_or_none, open_append
from fewbit._lock import locked
from fewbit.compress.distill import kd_loss
from fewbit.data.sources import RegressionSource, load_source
from fewbit.device import resolve_device
from fewbit.errors import ConfigError, FewbitError, FewbitFormatError, NotResumableError, TrainingError
from fewbit.evaluation import evaluate
from fewbit.meta import ALGORITHMS, build_algorithm
from fewbit.meta.base import StepOutput
from fewbit.runtime.preprocess import Preprocessing
from fewbit.train import checkpoint as ck
from fewbit.train.config import TrainConfig
from fewbit.train.distributed import (
    World,
    all_reduce_sum,
    barrier,
    setup_world,
    shard_bounds,
    shard_task,
    teardown_world,
)
from fewbit.train.run import (
    CHECKPOINT_DIR,
    EVAL_NAME,
    METRICS_NAME,
    RESTARTED_PREFIX,
    Run,
    build_model,
    check_model_size,
    check_run_files,
    checkpoint_progress,
    init_weights,
    input_shape_of,
    is_run_dir,
    model_ways,
    read_run_config,
    read_run_text,
    write_run_config,
)
from fewbit.train.samplers import task_sampler, training_sampler
from fewbit.train.teacher import load_teacher

VAL_SEED = 4321  # validation tasks are the same fixed list at every validation


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
        return _Trainer(config, Path(out_dir), model, device, world, progress, on_step).train(resume, restart)
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


class _Trainer:
    def __init__(
        self, config: TrainConfig, out_dir: Path, model: nn.Module | None, device: torch.device, world: World,
        progress: bool, on_step: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.config, self.out_dir, self.device, self.world = config, out_dir, device, world
        self.on_step = on_step
        self.progress = progress and world.is_main
        self.ckpt_dir = out_dir / CHECKPOINT_DIR
        if world.distributed and config.meta_batch < world.size:
            raise ConfigError(
                f"TrainConfig.meta_batch: {config.meta_batch} tasks cannot be split over {world.size} ranks"
            )

        torch.manual_seed(config.seed)  # model initialisation
        self.episodic = ALGORITHMS[config.meta.algorithm].episodic
        if model is None:
            check_model_size(config, 1)  # an image size the backbone pools away fails before the data loads
        self._load_data()
        # The samplers check the task shape against the data before the model is built: a request
        # for more classes than the data has must fail without allocating a head for them.
        self.sample_gen = torch.Generator().manual_seed(config.seed)
        self.sampler: Any = training_sampler(config, self.train_ds, episodic=self.episodic, generator=self.sample_gen)
        if config.val_every > 0 and (self.val_ds is not None or config.regression):
            # fail early (not at the first validation) when the val split is too small for the task shape
            task_sampler(self.val_ds, ways=config.ways, shots=config.shots, queries=config.queries,
                         rotations=False, generator=torch.Generator())
        if model is None:
            model = build_model(config, model_ways(config, self.episodic, self.train_classes),
                                input_shape_of(config, self.preprocessing))
        self.model = model.to(device)
        if config.init_from:
            init_weights(self.model, config.init_from)
        self.algorithm = build_algorithm(config.meta, model=self.model)
        self.head_ways = model_ways(config, self.episodic, self.train_classes)
        self.teacher: nn.Module | None = None
        if config.teacher is not None:
            if self.episodic:
                raise ConfigError(f"TrainConfig.teacher: {config.algorithm} is episodic; distillation from a teacher "
                                  "needs a supervised algorithm (finetune)")
            self.teacher = load_teacher(config.teacher, classes=self.head_ways, preprocessing=self.preprocessing,
                                        input_shape=input_shape_of(config, self.preprocessing), device=device,
                                        student_dir=out_dir)
        self.extras: dict[str, nn.Parameter] = dict(self.algorithm.extra_parameters(self.model))
        self.named = [(ck.key(ck.MODEL, n), p) for n, p in self.model.named_parameters() if p.requires_grad]
        self.named += [(ck.key(ck.EXTRAS, n), p) for n, p in self.extras.items()]
        self.optimizer = torch.optim.Adam([p for _, p in self.named], lr=config.outer_lr)
        self.step = 0
        self.best: dict[str, Any] | None = None
        self.last_good: Path | None = None

    # -- set-up ---------------------------------------------------------------------------------

    def _load_data(self) -> None:
        config = self.config
        source = load_source(config.dataset, options=config.data_options(self.progress))
        self.preprocessing: Preprocessing | None = None
        if not isinstance(source, RegressionSource):
            if config.regression:  # pragma: no cover - spec kinds agree by construction
                raise ConfigError("TrainConfig.dataset: expected a regression source")
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

    # -- the loop -------------------------------------------------------------------------------

    def train(self, resume: bool, restart: bool = False) -> Run:
        lock: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        if self.world.is_main:
            self._make_dir(resume)
            lock = locked(self.out_dir)
        with lock:
            if self.world.is_main:
                self._prepare_dir(resume)
            barrier(self.world)
            if resume:
                self._restore(restart)
                if self.world.is_main:
                    write_run_config(self.out_dir, self.config)  # only now: a refused resume changes nothing
            return self._train()

    def _train(self) -> Run:
        config = self.config
        metrics = open_append(self.out_dir / METRICS_NAME) if self.world.is_main else None
        bar = tqdm(total=config.steps, initial=self.step, desc=f"train {config.algorithm}", disable=not self.progress,
                   dynamic_ncols=True)
        start_time = time.perf_counter()
        try:
            while self.step < config.steps:
                step = self.step + 1
                snapshot = self._rng_state()
                loss, accuracy = self._outer_step(step, snapshot)
                self.step = step
                record: dict[str, Any] = {"step": step, "kind": "train", "loss": loss, "lr": self._lr(step)}
                if accuracy is not None:
                    record["accuracy"] = accuracy
                record["time"] = round(time.perf_counter() - start_time, 3)
                _append(metrics, record, step)
                if self.on_step is not None:
                    self.on_step(record)
                postfix = {"loss": f"{loss:.4f}"}
                if accuracy is not None:
                    postfix["acc"] = f"{accuracy:.3f}"
                if self._due(step, config.val_every) and self.world.is_main:  # other ranks need no best
                    val = self._validate(step)
                    _append(metrics, val, step)
                    postfix["val"] = f"{val['value']:.3f}"
                if self._due(step, config.checkpoint_every):
                    self._save_step()
                bar.set_postfix(postfix, refresh=False)
                bar.update(1)
            if self.world.is_main and (self.best is None or self.best.get("value") is None):
                # no validation ran: the last weights are the best
                self.best = {"step": self.step, "metric": None, "value": None}
                self._save_best()
            newest = ck.step_checkpoints(self.ckpt_dir)
            if self.world.is_main and (not newest or newest[0] != ck.step_path(self.ckpt_dir, self.step)):
                self._save_step()  # the last step is always resumable, whatever checkpoint_every says
        finally:
            bar.close()
            if metrics is not None:
                metrics.close()
        barrier(self.world)
        return Run(config, self.model, self.algorithm, self.extras, self.out_dir, self.step, self.best,
                   self.preprocessing)

    def _due(self, step: int, every: int) -> bool:
        return bool(every) and (step % every == 0 or step == self.config.steps)

    def _lr(self, step: int) -> float:
        if self.config.schedule == "cosine":
            return self.config.outer_lr * 0.5 * (1.0 + math.cos(math.pi * (step - 1) / max(1, self.config.steps)))
        return self.config.outer_lr

    def _outer_step(self, step: int, snapshot: dict[str, torch.Tensor]) -> tuple[float, float | None]:
        config, world = self.config, self.world
        for group in self.optimizer.param_groups:
            group["lr"] = self._lr(step)
        params = dict(self.model.named_parameters())
        if self.episodic:
            task = self.sampler.sample(config.meta_batch)  # every rank draws the same global meta-batch
            local = shard_task(task, world).to(self.device)
            share = local.num_tasks / config.meta_batch
            out = self.algorithm.step(self.model, params, local, self.extras, outer_step=step)
        else:
            x, y = self.sampler.sample()
            start, stop = shard_bounds(x.shape[0], world)
            x, y = x[start:stop].to(self.device), y[start:stop].to(self.device)
            share = (stop - start) / config.batch_size
            out = self.algorithm.step_supervised(self.model, params, x, y, self.extras)
            if self.teacher is not None:
                out = self._distilled(out, x)
        self.optimizer.zero_grad(set_to_none=True)
        grads = out.grads
        if grads is None:
            (out.loss * share if world.distributed else out.loss).backward()
        else:  # e.g. Reptile: the algorithm gives the outer gradient itself
            for name, p in self.named:
                key = name.split("/", 1)[1]
                g = grads.get(key) if isinstance(grads, dict) else None
                p.grad = None if g is None else (g.detach() * share if world.distributed else g.detach().clone())
        loss = out.loss.detach().float()
        acc = out.accuracy
        acc_t = None
        if acc is not None:
            acc_t = acc.detach().float() if torch.is_tensor(acc) else torch.tensor(float(acc))
        if world.distributed:
            tensors = [p.grad if p.grad is not None else torch.zeros_like(p) for _, p in self.named]
            scalars = torch.stack([loss * share, (acc_t.to(loss.device) * share) if acc_t is not None else loss * 0])
            reduced = all_reduce_sum([*tensors, scalars], world)
            for (_, p), g in zip(self.named, reduced[:-1]):
                p.grad = g
            loss, acc_t = reduced[-1][0], (reduced[-1][1] if acc_t is not None else None)
        loss_value = float(loss)
        if not math.isfinite(loss_value) or not self._grads_finite():
            what = f"the loss is {loss_value}" if not math.isfinite(loss_value) else "a gradient is not finite"
            self._stop_not_finite(step, what, snapshot)
        if config.grad_clip is not None:
            nn.utils.clip_grad_norm_([p for _, p in self.named], config.grad_clip)
        self.optimizer.step()
        return loss_value, (float(acc_t) if acc_t is not None else None)

    def _distilled(self, out: StepOutput, x: torch.Tensor) -> StepOutput:
        """`out` with its loss mixed with the KL divergence to the teacher's softened scores of `x`."""
        if out.logits is None:  # pragma: no cover - every supervised algorithm returns its logits
            raise ConfigError(f"TrainConfig.teacher: {self.config.algorithm} does not expose its class scores")
        with torch.no_grad():
            target = self.teacher(x)  # type: ignore[misc]
        w = self.config.teacher_weight
        loss = (1 - w) * out.loss + w * kd_loss(out.logits, target, self.config.teacher_temperature)
        return dataclasses.replace(out, loss=loss)

    def _grads_finite(self) -> bool:
        norms = [p.grad.detach().abs().max() for _, p in self.named if p.grad is not None and p.grad.numel()]
        return not norms or bool(torch.isfinite(torch.stack(norms)).all())

    def _stop_not_finite(self, step: int, what: str, snapshot: dict[str, torch.Tensor]) -> None:
        # The weights and optimizer still hold step-1's good state: keep it as a checkpoint.
        kept = self.last_good
        if self.world.is_main and self.step > 0 and (kept is None or kept != ck.step_path(self.ckpt_dir, self.step)):
            with contextlib.suppress(FewbitError):
                kept = self._save_step(rng=snapshot)
        where = f"the last good checkpoint is {kept}" if kept else "no checkpoint was written yet"
        raise TrainingError(
            f"step {step}: {what}; training stopped and {where}. Lower --outer-lr or --inner-lr, or set grad_clip"
        )

    # -- validation -----------------------------------------------------------------------------

    def _validate(self, step: int) -> dict[str, Any]:
        config = self.config
        run = Run(config, self.model, self.algorithm, self.extras, self.out_dir, step, None, self.preprocessing)
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
                self._save_best()
        return {"step": step, "kind": "val", "metric": result.metric, "value": value, "ci95": result.ci95,
                "best": self.best["value"] if self.best else None}

    # -- files ----------------------------------------------------------------------------------

    def _make_dir(self, resume: bool) -> None:
        """Check what `out_dir` is and create it for a new run (nothing is written into it yet)."""
        out = self.out_dir
        if resume:
            if not is_run_dir(out):
                raise ConfigError(f"--resume: {out} is not a run directory (it has no config.yaml)")
        else:
            if out.exists() and not out.is_dir():
                raise ConfigError(f"--out: {out} exists and is not a directory")
            out.mkdir(parents=True, exist_ok=True)

    def _prepare_dir(self, resume: bool) -> None:
        """With the lock held: refuse to start a new run over an old one, then write its config."""
        out = self.out_dir
        check_run_files(out)
        if not resume:
            if is_run_dir(out):
                raise ConfigError(
                    f"--out: {out} already holds a run; resume it with --resume {out} or pick another --out"
                )
            self.ckpt_dir.mkdir(exist_ok=True)
            write_run_config(out, self.config)

    def _state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "config": self.config.to_dict(),
            "model_ways": self.head_ways,
            "algorithm": self.config.algorithm,
            "best": self.best,
            "world_size": self.world.size,
            "preprocessing": None if self.preprocessing is None else self.preprocessing.to_dict(),
        }

    def _rng_state(self) -> dict[str, torch.Tensor]:
        state = {"torch": torch.get_rng_state(), "sampler": self.sample_gen.get_state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return ck.grouped(ck.RNG, state)

    def _weights(self) -> dict[str, torch.Tensor]:
        """The model's state and the algorithm's extras, as a checkpoint names them."""
        return {**ck.grouped(ck.MODEL, self.model.state_dict()), **ck.grouped(ck.EXTRAS, dict(self.extras))}

    def _save_best(self) -> None:
        ck.save_checkpoint(self.ckpt_dir / ck.BEST_NAME, self._weights(), self._state())

    def _save_step(self, rng: dict[str, torch.Tensor] | None = None) -> Path | None:
        if not self.world.is_main:
            return None
        tensors = self._weights()
        optim = self.optimizer.state_dict()
        for index, slots in optim["state"].items():
            for slot, value in slots.items():
                tensors[ck.key(ck.OPTIM, f"{index}/{slot}")] = value if torch.is_tensor(value) else torch.tensor(value)
        tensors.update(rng if rng is not None else self._rng_state())
        state = self._state()
        state["optim_groups"] = optim["param_groups"]
        path = ck.save_checkpoint(ck.step_path(self.ckpt_dir, self.step), tensors, state)
        ck.prune_checkpoints(self.ckpt_dir, self.config.keep_checkpoints, newest=path)
        self.last_good = path
        return path

    def _restore(self, restart: bool) -> None:
        """Load the newest checkpoint that can be resumed; never throw away what the run holds."""
        if restart:
            self._start_over("--restart")
            return
        found, skipped = self._resumable_checkpoint()
        if found is None:
            held = sorted(p.name for p in self.ckpt_dir.glob("*.safetensors")) if self.ckpt_dir.is_dir() else []
            if held:
                raise NotResumableError(
                    f"--resume: {self.out_dir} holds {', '.join(held[:4])}{', ...' if len(held) > 4 else ''} "
                    f"but no step checkpoint that can be resumed ({'; '.join(skipped)[:300] or 'none verifies'}); "
                    f"nothing was changed. To train it again from step 0, keeping the old files, add --restart"
                )
            self._start_over("no checkpoint was written before the run stopped")
            return
        if self.world.is_main:
            for reason in skipped:
                warnings.warn(f"{reason}; falling back to the previous checkpoint", stacklevel=4)
        state = found.state
        self.model.load_state_dict(found.group(ck.MODEL))
        extras = found.group(ck.EXTRAS)
        with torch.no_grad():
            for name, p in self.extras.items():
                p.copy_(extras[name])
        slots: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in found.group(ck.OPTIM).items():
            index, name = key.split("/", 1)
            slots.setdefault(int(index), {})[name] = value
        self.optimizer.load_state_dict({"state": slots, "param_groups": state["optim_groups"]})
        rng = found.group(ck.RNG)
        torch.set_rng_state(rng["torch"])
        self.sample_gen.set_state(rng["sampler"])
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        self.step, self.best = checkpoint_progress(found)
        self.last_good = found.path  # not a damaged newer one
        if self.world.is_main:
            _truncate_metrics(self.out_dir / METRICS_NAME, self.step)

    def _resumable_checkpoint(self) -> tuple[ck.Checkpoint | None, list[str]]:
        """The newest step checkpoint that verifies and holds everything a resume needs, and why
        each newer one was skipped. A checkpoint written with other settings is an error."""
        skipped: list[str] = []
        bound = 8 * sum(p.numel() for _, p in self.named) + (1 << 20)  # as run.checkpoint_bound
        for path in ck.step_checkpoints(self.ckpt_dir):
            try:
                found = ck.load_checkpoint(path, max_elements=bound)
            except FewbitFormatError as exc:
                skipped.append(str(exc))
                continue
            now = self.config.to_dict()
            saved = dict(found.state.get("config") or {})
            # in today's form (fields added since take their defaults, old flat forms are folded); one that
            # does not validate is compared as written: it differs, and the difference is named below
            with contextlib.suppress(ConfigError):
                saved = TrainConfig.from_dict({**saved, "steps": self.config.steps}).to_dict()
            for key in ("steps", "device"):
                saved.pop(key, None)
                now.pop(key, None)
            if saved != now:
                diff = sorted(str(k) for k in set(saved) | set(now) if saved.get(k) != now.get(k))
                raise ConfigError(
                    f"--resume: the checkpoint {found.path} was written with other settings ({', '.join(diff[:8])})"
                )
            problem = self._missing_state(found)
            if problem is None:
                return found, skipped
            skipped.append(f"{path} {problem}")
        return None, skipped

    def _missing_state(self, found: ck.Checkpoint) -> str | None:
        """Why `found` cannot be resumed exactly (what it lacks), or None when it can."""
        try:
            checkpoint_progress(found)
        except FewbitFormatError as exc:
            return str(exc).removeprefix(f"{found.path}: ")
        groups = found.state.get("optim_groups")
        if not isinstance(groups, list) or len(groups) != len(self.optimizer.param_groups) or not all(
            isinstance(g, dict) and isinstance(g.get("params"), list) and len(g["params"]) == len(mine["params"])
            for g, mine in zip(groups, self.optimizer.param_groups)
        ):
            return "holds no optimizer state for this model"
        rng = found.group(ck.RNG)
        for name in ("torch", "sampler"):
            t = rng.get(name)
            if t is None or t.dtype != torch.uint8:
                return f"lacks the random-number state {ck.key(ck.RNG, name)}"
        own = self.model.state_dict()
        model = found.group(ck.MODEL)
        if model.keys() != own.keys() or any(model[k].shape != own[k].shape for k in own):
            return "holds weights that do not fit this run's model"
        extras = found.group(ck.EXTRAS)
        if any(name not in extras or extras[name].shape != p.shape for name, p in self.extras.items()):
            return "lacks meta-parameters of this run"
        count = len(self.named)
        for key, value in found.group(ck.OPTIM).items():
            index, _, slot = key.partition("/")
            if not index.isdigit() or int(index) >= count or not slot:
                return f"holds an optimizer slot {key!r} for no parameter"
            if value.dim() and value.shape != self.named[int(index)][1].shape:
                return f"holds an optimizer slot {key!r} of the wrong shape"
        return None

    def _start_over(self, reason: str) -> None:
        """Train from step 0: what the run holds moves into `restarted-<time>/` (nothing is deleted)."""
        if not self.world.is_main:
            return
        out = self.out_dir
        present = [name for name in (CHECKPOINT_DIR, METRICS_NAME, EVAL_NAME) if (out / name).exists()]
        if (out / METRICS_NAME).exists() and not (out / METRICS_NAME).stat().st_size and present == [METRICS_NAME]:
            present = []  # an empty metrics file holds nothing to keep
        if present:
            stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            dest = out / f"{RESTARTED_PREFIX}{stamp}"
            n = 1
            while dest.exists():
                n += 1
                dest = out / f"{RESTARTED_PREFIX}{stamp}-{n}"
            dest.mkdir()
            for name in present:
                os.replace(out / name, dest / name)
            warnings.warn(f"{reason}: training {out} again from step 0; its {', '.join(present)} moved to {dest}",
                          stacklevel=4)
        self.ckpt_dir.mkdir(exist_ok=True)
        self.step, self.best = 0, None


def _append(metrics: Any, record: dict[str, Any], step: int) -> None:
    """Append one metrics line (rank 0 only); a full disk stops training with a clear message."""
    if metrics is None:
        return
    try:
        metrics.write(json.dumps({k: finite_or_none(v) for k, v in record.items()}, allow_nan=False) + "\n")
        metrics.flush()
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise TrainingError(
                f"step {step}: disk full while appending to {metrics.name}; the checkpoints already written are "
                f"intact; free space and resume with --resume"
            ) from None
        raise


def _truncate_metrics(path: Path, step: int) -> None:
    """Keep the metric lines up to `step` (a torn last line from a kill is dropped)."""
    if not os.path.lexists(path):
        return
    keep = []
    for line in read_run_text(path).splitlines():
        try:
            record = json.loads(line)
            if isinstance(record, dict) and int(record.get("step", 0)) <= step:
                keep.append(line)
        except (ValueError, TypeError, OverflowError):  # a torn or edited line is dropped
            continue
    atomic_write_text(path, "".join(f"{line}\n" for line in keep))
