"""Pieces both ResNets share (their attribute names are the checkpoints' state_dict keys)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn


def projection_shortcut(in_planes: int, out_planes: int, stride: int) -> Optional[nn.Sequential]:
    """The 1x1 convolution and batch norm of a residual block whose shape changes (None when
    it does not: the shortcut is the identity)."""
    if stride == 1 and in_planes == out_planes:
        return None
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False),
        nn.BatchNorm2d(out_planes),
    )


class ResidualBlock(nn.Module):
    """relu(residual(x) + shortcut(x)): the blocks build their layers and say what `residual` is."""

    downsample: Optional[nn.Sequential]
    relu: nn.ReLU

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(self.residual(x) + shortcut)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
