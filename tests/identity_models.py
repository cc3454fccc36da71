"""Models for the resume-identity tests, loaded as `tests/identity_models.py:NAME`."""

import os
import sys

import torch
from torch import nn


class Linear(nn.Module):
    """A fixed random linear classifier on 16 inputs, 5 classes (seed from the environment,
    so that a test can replace the model behind the same spec)."""

    def __init__(self, seed=None):
        super().__init__()
        seed = int(os.environ.get("TOPK_CERTIFY_TEST_SEED", "0")) if seed is None else seed
        generator = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(5, 16, generator=generator))

    def forward(self, x):
        return x.flatten(1) @ self.weight.T


def make_linear():
    return Linear()


class NaNOnClean(Linear):
    """NaN logits for every input: the clean probe already sees them."""

    def forward(self, x):
        return super().forward(x) * float("nan")


class ExitsOnCall(Linear):
    """Calls sys.exit(7) on forward call number TOPK_CERTIFY_TEST_EXIT_AT (1 = the probe)."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls == int(os.environ.get("TOPK_CERTIFY_TEST_EXIT_AT", "1")):
            sys.exit(7)
        return super().forward(x)


class Slow(Linear):
    def forward(self, x):
        import time

        time.sleep(float(os.environ.get("TOPK_CERTIFY_TEST_DELAY", "0.05")))
        return super().forward(x)


class WidensAfterProbe(Linear):
    """5 logits on the first call (the probe), 7 on every later one."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        out = super().forward(x)
        return out if self.calls == 1 else torch.cat([out, out[:, :2]], dim=1)
