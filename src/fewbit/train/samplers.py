"""What the outer loop draws each step: task batches (episodic) or labelled image batches (finetune)."""

from __future__ import annotations

import torch

from fewbit.data.dataset import ImageDataset
from fewbit.data.episodes import EpisodeSampler, images_to_tensor
from fewbit.data.sinusoid import SinusoidSampler
from fewbit.errors import ConfigError, DataError


class LabelledBatchSampler:
    """Seeded batches of `(x [B, 1, H, W], y [B])` with global class labels over a whole split.

    With `rotations`, class c rotated by r*90 degrees is label `4*c + r` (4x the classes).
    """

    def __init__(
        self, dataset: ImageDataset, *, batch_size: int, rotations: bool = False, generator: torch.Generator
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"TrainConfig.batch_size: must be >= 1, got {batch_size}")
        if dataset.num_images == 0:
            raise DataError(f"{dataset.name} holds no images")
        self.batch_size, self.rotations, self.generator = batch_size, rotations, generator
        self._images = images_to_tensor(dataset.images)  # [n, 1, H, W]
        self._labels = torch.from_numpy(dataset.labels).long()  # [n]
        self.num_classes = dataset.num_classes * (4 if rotations else 1)

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch of images and their global labels."""
        idx = torch.randint(self._images.shape[0], (self.batch_size,), generator=self.generator)
        x = self._images[idx].clone()  # [B, 1, H, W]
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
    dataset: ImageDataset | None, *, ways: int, shots: int, queries: int, rotations: bool, generator: torch.Generator
) -> EpisodeSampler | SinusoidSampler:
    """The episodic sampler for a split (`dataset=None`: sinusoid regression)."""
    if dataset is None:
        return SinusoidSampler(shots=shots, queries=queries, generator=generator)
    return EpisodeSampler(dataset, ways=ways, shots=shots, queries=queries, rotations=rotations, generator=generator)
