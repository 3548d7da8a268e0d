"""What the outer loop draws each step: task batches (episodic) or labelled image batches (finetune)."""

from __future__ import annotations

from typing import Any

import torch

from fewbit.data.episodes import EpisodeSampler
from fewbit.data.sinusoid import SinusoidSampler
from fewbit.errors import ConfigError, DataError


class LabelledBatchSampler:
    """Seeded batches of `(x [B, C, H, W], y [B])` with global class labels over a whole split.

    With `rotations`, class c rotated by r*90 degrees is label `4*c + r` (4x the classes);
    `augment` warps each drawn image (see `fewbit.data.augment`).
    """

    def __init__(
        self, dataset: Any, *, batch_size: int, rotations: bool = False, augment: str = "none",
        generator: torch.Generator,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"TrainConfig.batch_size: must be >= 1, got {batch_size}")
        if dataset.num_images == 0:
            raise DataError(f"{dataset.name} holds no images")
        if rotations and not dataset.rotatable:
            raise ConfigError(f"TrainConfig.rotations: {dataset.name} has no orientation to turn; rotations apply to "
                              "square images only")
        self.dataset, self.batch_size, self.rotations, self.generator = dataset, batch_size, rotations, generator
        try:
            self.augment = dataset.augment_recipe(augment)
        except ValueError as exc:
            raise ConfigError(f"TrainConfig.augment: {exc}") from None
        self._labels = torch.from_numpy(dataset.labels).long()  # [n]
        self.num_classes = dataset.num_classes * (4 if rotations else 1)

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch of images and their global labels."""
        idx = torch.randint(self.dataset.num_images, (self.batch_size,), generator=self.generator)
        if self.augment == "none":
            x = self.dataset.tensor(idx)  # [B, C, H, W]
        else:
            x = self.dataset.augmented(idx, self.augment, self.generator)
        y = self._labels[idx]  # [B]
        if self.rotations:
            rot = torch.randint(4, (self.batch_size,), generator=self.generator)
            for r in (1, 2, 3):
                sel = rot == r
                if sel.any():
                    x[sel] = torch.rot90(x[sel], r, dims=(-2, -1))
            y = y * 4 + rot
        return x, y


def task_sampler(
    dataset: Any | None, *, ways: int, shots: int, queries: int, rotations: bool, generator: torch.Generator,
    augment: str = "none", within_group: bool = False,
) -> EpisodeSampler | SinusoidSampler:
    """The episodic sampler for a split (`dataset=None`: sinusoid regression)."""
    if dataset is None:
        return SinusoidSampler(shots=shots, queries=queries, generator=generator)
    return EpisodeSampler(dataset, ways=ways, shots=shots, queries=queries, rotations=rotations, augment=augment,
                          within_group=within_group, generator=generator)


def training_sampler(
    config: Any, dataset: Any | None, *, episodic: bool, generator: torch.Generator
) -> EpisodeSampler | SinusoidSampler | LabelledBatchSampler:
    """What a run's training steps draw from: tasks (episodic algorithms) or labelled batches, with the
    run's rotations and augmentation. `config` is the run's TrainConfig."""
    if episodic:
        return task_sampler(dataset, ways=config.ways, shots=config.shots, queries=config.queries,
                            rotations=config.rotations, generator=generator, augment=config.augment,
                            within_group=config.within_group)
    return LabelledBatchSampler(dataset, batch_size=config.batch_size, rotations=config.rotations,
                                augment=config.augment, generator=generator)
