"""torch.distributed glue: which rank we are, splitting a meta-batch, all-reducing meta-gradients.

Launched with `torchrun`, each process reads RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT from
its environment; gloo is used on CPU and nccl on CUDA. Every rank draws the same global meta-batch
from the same seeded sampler and keeps the slice of tasks it owns, so the run is the same
computation as one process with the same global meta-batch.
"""

from __future__ import annotations

import dataclasses
import os

import torch
import torch.distributed as dist

from fewbit.data.task import Task


@dataclasses.dataclass(frozen=True)
class World:
    """This process's place: `rank` of `size`; `owned` says whether we set up the process group."""

    rank: int = 0
    size: int = 1
    owned: bool = False

    @property
    def is_main(self) -> bool:
        """Only the main rank (0) writes files and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def setup_world(device: torch.device) -> World:
    """Join the process group that torchrun describes in the environment (a single process otherwise)."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), owned=False)
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 or not dist.is_available():
        return World()
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    return World(dist.get_rank(), dist.get_world_size(), owned=True)


def teardown_world(world: World) -> None:
    """Leave the process group if we created it."""
    if world.owned and dist.is_initialized():
        dist.destroy_process_group()


def shard_bounds(total: int, world: World) -> tuple[int, int]:
    """The [start, stop) slice of `total` items that `world.rank` owns (contiguous, sizes differ by <= 1)."""
    base, extra = divmod(total, world.size)
    start = world.rank * base + min(world.rank, extra)
    return start, start + base + (1 if world.rank < extra else 0)


def shard_task(task: Task, world: World) -> Task:
    """This rank's tasks of a global meta-batch."""
    if not world.distributed:
        return task
    start, stop = shard_bounds(task.num_tasks, world)
    return task[start:stop]


def all_reduce_sum(tensors: list[torch.Tensor], world: World) -> list[torch.Tensor]:
    """Sum `tensors` over ranks in one flat buffer (one collective per step); returns new tensors."""
    if not world.distributed:
        return tensors
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    out, offset = [], 0
    for t in tensors:
        out.append(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()
    return out


def barrier(world: World) -> None:
    """Wait for every rank."""
    if world.distributed:
        dist.barrier()


def reduce_outer(
    named: list[tuple[str, torch.Tensor]], loss: torch.Tensor, accuracy: torch.Tensor | None, share: float,
    world: World,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sum every rank's gradients into each parameter's `.grad`, and its share of the loss and
    accuracy, in one collective; returns the global (loss, accuracy). A single process: as given."""
    if not world.distributed:
        return loss, accuracy
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for _, p in named]
    acc = accuracy.to(loss.device) * share if accuracy is not None else loss * 0
    reduced = all_reduce_sum([*grads, torch.stack([loss * share, acc])], world)
    for (_, p), g in zip(named, reduced[:-1]):
        p.grad = g
    return reduced[-1][0], (reduced[-1][1] if accuracy is not None else None)
