"""Classifiers from Cohen-format checkpoints (Cohen et al. 2019, SmoothAdv, MACER, ...).

Needs PyTorch; `import topk_certify` does not import this package.

    model = load_checkpoint("noise_0.25/checkpoint.pth.tar", device="cuda")

The architectures (`cifar_resnet20`, `cifar_resnet110`, `resnet50`) are rebuilt here with
torchvision's and Cohen et al.'s parameter names, so torchvision is not needed.
"""

from .architectures import ARCHITECTURES, build_model
from .checkpoint import load_checkpoint
from .errors import CheckpointError
from .normalize import CIFAR10_MEAN, CIFAR10_SD, IMAGENET_MEAN, IMAGENET_SD, Normalize
from .spec import ModelSpecError, load_model
from .torchfile import is_torchscript

__all__ = [
    "ARCHITECTURES",
    "CIFAR10_MEAN",
    "CIFAR10_SD",
    "CheckpointError",
    "IMAGENET_MEAN",
    "IMAGENET_SD",
    "Normalize",
    "build_model",
    "is_torchscript",
    "load_checkpoint",
    "load_model",
    "ModelSpecError",
]
