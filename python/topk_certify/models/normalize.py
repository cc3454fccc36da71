"""Per-channel input standardisation, the first layer of Cohen et al.'s classifiers."""

from __future__ import annotations

from typing import Sequence

import torch

# Cohen et al.'s code/datasets.py. The noise is added in [0, 1] pixel space, so the
# standardisation is part of the model rather than of the data pipeline.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_SD = (0.2023, 0.1994, 0.2010)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_SD = (0.229, 0.224, 0.225)


class Normalize(torch.nn.Module):
    """(x - mean) / sd per channel of an (N, C, H, W) batch.

    mean and sd are non-persistent buffers: they follow .to(device) but stay out of the
    state_dict, as Cohen's NormalizeLayer (plain tensor attributes) does, so checkpoints
    trained with it load with strict=True.
    """

    def __init__(self, mean: Sequence[float], sd: Sequence[float]):
        super().__init__()
        if len(mean) != len(sd):
            raise ValueError(f"mean and sd need one value per channel, got {len(mean)} and {len(sd)}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("sd", torch.tensor(sd, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.sd

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, sd={self.sd.flatten().tolist()}"
