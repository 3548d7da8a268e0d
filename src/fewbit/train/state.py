"""What a resumable checkpoint holds and gives back: the model's weights, the algorithm's extras,
Adam's state and the random-number streams; and why a checkpoint cannot be resumed exactly."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fewbit.errors import ConfigError, FewbitFormatError
from fewbit.train import checkpoint as ck
from fewbit.train.config import TrainConfig
from fewbit.train.run import checkpoint_progress


class TrainingState:
    """The tensors training changes, named as a checkpoint names them.

    `named` lists every trained tensor (`model/<name>`, `extras/<name>`) in the optimizer's order;
    `sample_gen` is the task sampler's generator (its state travels with the checkpoint, so a
    resumed run draws the same tasks).
    """

    def __init__(self, model: nn.Module, extras: dict[str, nn.Parameter], outer_lr: float,
                 sample_gen: torch.Generator, device: torch.device) -> None:
        self.model, self.extras, self.sample_gen, self.device = model, extras, sample_gen, device
        self.named = [(ck.key(ck.MODEL, n), p) for n, p in model.named_parameters() if p.requires_grad]
        self.named += [(ck.key(ck.EXTRAS, n), p) for n, p in extras.items()]
        self.optimizer = torch.optim.Adam([p for _, p in self.named], lr=outer_lr)

    @property
    def parameters(self) -> list[torch.Tensor]:
        return [p for _, p in self.named]

    def weights(self) -> dict[str, torch.Tensor]:
        """The model's state and the algorithm's extras (what a best checkpoint holds)."""
        return {**ck.grouped(ck.MODEL, self.model.state_dict()), **ck.grouped(ck.EXTRAS, dict(self.extras))}

    def rng(self) -> dict[str, torch.Tensor]:
        """The random-number streams: torch's, the sampler's, and CUDA's on a GPU."""
        state = {"torch": torch.get_rng_state(), "sampler": self.sample_gen.get_state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return ck.grouped(ck.RNG, state)

    def resumable(self, rng: dict[str, torch.Tensor] | None = None) -> tuple[dict[str, torch.Tensor], list[Any]]:
        """The tensors of a resumable checkpoint (weights, Adam's slots, RNG) and Adam's param groups."""
        tensors = self.weights()
        optim = self.optimizer.state_dict()
        for index, slots in optim["state"].items():
            for slot, value in slots.items():
                tensors[ck.key(ck.OPTIM, f"{index}/{slot}")] = value if torch.is_tensor(value) else torch.tensor(value)
        tensors.update(rng if rng is not None else self.rng())
        return tensors, optim["param_groups"]

    def max_elements(self) -> int:
        """The most tensor elements a checkpoint of this state holds, with room (see run.checkpoint_bound)."""
        return 8 * sum(p.numel() for _, p in self.named) + (1 << 20)

    def load(self, found: ck.Checkpoint) -> None:
        """Continue from `found` (checked by `missing`): weights, extras, Adam, RNG streams."""
        self.model.load_state_dict(found.group(ck.MODEL))
        extras = found.group(ck.EXTRAS)
        with torch.no_grad():
            for name, p in self.extras.items():
                p.copy_(extras[name])
        slots: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in found.group(ck.OPTIM).items():
            index, name = key.split("/", 1)
            slots.setdefault(int(index), {})[name] = value
        self.optimizer.load_state_dict({"state": slots, "param_groups": found.state["optim_groups"]})
        rng = found.group(ck.RNG)
        torch.set_rng_state(rng["torch"])
        self.sample_gen.set_state(rng["sampler"])
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)

    def missing(self, found: ck.Checkpoint) -> str | None:
        """Why `found` cannot be resumed exactly (what it lacks), or None when it can."""
        try:
            checkpoint_progress(found)
        except FewbitFormatError as exc:
            return str(exc).removeprefix(f"{found.path}: ")
        groups = found.state.get("optim_groups")
        mine_groups = self.optimizer.param_groups
        if not isinstance(groups, list) or len(groups) != len(mine_groups) or not all(
            isinstance(g, dict) and isinstance(g.get("params"), list) and len(g["params"]) == len(mine["params"])
            for g, mine in zip(groups, mine_groups)
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


def resumable_checkpoint(checkpoints: Path, config: TrainConfig,
                         state: TrainingState) -> tuple[ck.Checkpoint | None, list[str]]:
    """The newest step checkpoint in `checkpoints` that verifies and holds everything a resume of
    `config` needs, and why each newer one was skipped. One written with other settings is a
    ConfigError (the config's `steps` and `device` may change)."""
    skipped: list[str] = []
    for path in ck.step_checkpoints(checkpoints):
        try:
            found = ck.load_checkpoint(path, max_elements=state.max_elements())
        except FewbitFormatError as exc:
            skipped.append(str(exc))
            continue
        now = config.to_dict()
        saved = dict(found.state.get("config") or {})
        # in today's form (fields added since take their defaults, old flat forms are folded); one that
        # does not validate is compared as written: it differs, and the difference is named below
        with contextlib.suppress(ConfigError):
            saved = TrainConfig.from_dict({**saved, "steps": config.steps}).to_dict()
        for key in ("steps", "device"):
            saved.pop(key, None)
            now.pop(key, None)
        if saved != now:
            diff = sorted(str(k) for k in set(saved) | set(now) if saved.get(k) != now.get(k))
            raise ConfigError(
                f"--resume: the checkpoint {found.path} was written with other settings ({', '.join(diff[:8])})"
            )
        problem = state.missing(found)
        if problem is None:
            return found, skipped
        skipped.append(f"{path} {problem}")
    return None, skipped
