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


class FailsOnFullBatch(Linear):
    """Passes the one-input probe, then fails on a full batch (as a model out of memory does)."""

    def forward(self, x):
        if x.shape[0] > 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return super().forward(x)


class OutOfMemoryAbove150(Linear):
    """Runs out of memory (torch's own error) on batches of more than 150 rows."""

    def forward(self, x):
        if x.shape[0] > 150:
            raise torch.OutOfMemoryError("out of memory: tried to allocate 1.00 GiB")
        return super().forward(x)


class BoolLogits(Linear):
    def forward(self, x):
        return super().forward(x) > 0


def on_meta_device():
    with torch.device("meta"):
        return Linear()


class FailsOnRankOne(Linear):
    """Under torchrun, rank 1 fails on its first full batch (rank 0 and the probe pass)."""

    def forward(self, x):
        if x.shape[0] > 1 and os.environ.get("RANK") == "1":
            raise RuntimeError("device-side assert triggered on rank 1")
        return super().forward(x)
