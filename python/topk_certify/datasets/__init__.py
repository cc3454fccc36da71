"""Labelled data sets read lazily, a chunk of examples at a time.

    with open_data("cifar10:./dataset_cache") as data:
        x = data.read(range(0, 100))   # float32 (100, 3, 32, 32) in [0, 1]
        y = data.labels[:100]

Specs: `cifar10:ROOT` (ROOT/cifar-10-batches-py/test_batch, as torchvision stores it; its
uint8 pixels stay in memory, floats are made per read), `imagenet:DIR` (an ImageFolder,
decoded per read; needs Pillow), `FILE.npz` (x memory-mapped unless compressed) and
`FILE.pt` / `FILE.pth` (loaded whole). No file is ever unpickled beyond plain data.
`import topk_certify` does not import this package.
"""

from .errors import DataError
from .source import DataSource
from .spec import open_data

__all__ = ["DataError", "DataSource", "open_data"]
