"""Tiny models for the command-line tests, loaded as `tests/cli_models.py:NAME`."""

import os
import time

import torch
from torch import nn


class Linear(nn.Module):
    """A fixed random linear classifier on 16 inputs, 5 classes."""

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.weight = nn.Parameter(torch.randn(5, 16, generator=generator))

    def forward(self, x):
        return x.flatten(1) @ self.weight.T


class Slow(Linear):
    """The same classifier, slowed down so that a test can kill a run in the middle."""

    def forward(self, x):
        time.sleep(float(os.environ.get("TOPK_CERTIFY_TEST_DELAY", "0.05")))
        return super().forward(x)


def make_linear():
    return Linear()


linear = Linear()
not_a_model = 42


def broken_factory():
    raise RuntimeError("cannot build the model")
