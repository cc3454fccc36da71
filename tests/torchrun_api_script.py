"""Run under torchrun by tests/test_torchrun.py: the Python API in a user's own loop,
`distributed.shard` + `certify_batch(indices=...)` + `distributed.gather_results`."""

import sys

import numpy as np
import torch.distributed as dist

import topk_certify
from topk_certify.distributed import gather_results, shard

sys.path.insert(0, sys.argv[2])
from cli_models import Linear  # noqa: E402

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
rng = np.random.default_rng(0)
x = rng.normal(size=(9, 1, 4, 4)).astype(np.float32)
labels = rng.integers(0, 5, 9)
mine = shard(range(9), rank, world, chunk=2)
result = topk_certify.certify_batch(Linear(), x[mine], labels[mine], k=[1, 2], sigma=0.5, n=400, seed=5, indices=mine)
merged = gather_results(result, mine)
# Fewer examples than ranks: a rank with an empty shard passes None.
few = shard(range(1), rank, world)
alone = (
    topk_certify.certify_batch(Linear(), x[few], labels[few], k=2, sigma=0.5, n=400, seed=5, indices=few)
    if few
    else None
)
merged_few = gather_results(alone, few)
if rank == 0:
    np.savez(
        sys.argv[1], radius=merged.radius, counts=merged.counts, labels=merged.labels, few_radius=merged_few.radius
    )
dist.destroy_process_group()
