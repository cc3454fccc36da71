"""The PyTorch front: the only part of the package that imports torch (inside functions, so
that importing it does not). `api` has the public functions, `certify` the protocols,
`sampler` the packed, seeded noise, `adaptive_loop` the staged sampling, `inputs` the checks
of model, device and inputs."""

from .api import certify_batch, sample_counts
from .predict import predict_batch

__all__ = ["certify_batch", "sample_counts", "predict_batch"]
