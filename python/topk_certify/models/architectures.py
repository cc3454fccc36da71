"""The architectures Cohen-format checkpoints name, each with its normalisation in front."""

from __future__ import annotations

from typing import Callable, Dict, NamedTuple, Sequence, Tuple

from torch import nn

from .cifar_resnet import CifarResNet
from .imagenet_resnet import ResNet50
from .normalize import CIFAR10_MEAN, CIFAR10_SD, IMAGENET_MEAN, IMAGENET_SD, Normalize


class Architecture(NamedTuple):
    build: Callable[[], nn.Module]
    mean: Sequence[float]
    sd: Sequence[float]
    input_shape: Tuple[int, int, int]  # what the data set feeds it (C, H, W)


_ARCHITECTURES: Dict[str, Architecture] = {
    "cifar_resnet20": Architecture(lambda: CifarResNet(20, 10), CIFAR10_MEAN, CIFAR10_SD, (3, 32, 32)),
    "cifar_resnet110": Architecture(lambda: CifarResNet(110, 10), CIFAR10_MEAN, CIFAR10_SD, (3, 32, 32)),
    "resnet50": Architecture(lambda: ResNet50(1000), IMAGENET_MEAN, IMAGENET_SD, (3, 224, 224)),
}

ARCHITECTURES: Tuple[str, ...] = tuple(_ARCHITECTURES)


def architecture(arch: str) -> Architecture:
    if not isinstance(arch, str) or arch not in _ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r} (known: {', '.join(ARCHITECTURES)})")
    return _ARCHITECTURES[arch]


def build_model(arch: str) -> nn.Sequential:
    """`Sequential(Normalize, network)` with random weights, laid out as Cohen et al. train it.

    Its state_dict keys are the network's under `1.` (the normalisation adds none).
    """
    spec = architecture(arch)
    return nn.Sequential(Normalize(spec.mean, spec.sd), spec.build())
