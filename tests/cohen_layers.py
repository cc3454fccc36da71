"""Cohen et al.'s NormalizeLayer as their code writes it, for tests that build checkpoints the
way their training did (and for model files the command line imports)."""

import torch


class CohenNormalizeLayer(torch.nn.Module):
    """The constants are plain attributes, not buffers: the layer adds no state_dict keys."""

    def __init__(self, means, sds):
        super().__init__()
        self.means = torch.tensor(means)
        self.sds = torch.tensor(sds)

    def forward(self, x):
        n, _, h, w = x.shape
        means = self.means.repeat((n, h, w, 1)).permute(0, 3, 1, 2)
        sds = self.sds.repeat((n, h, w, 1)).permute(0, 3, 1, 2)
        return (x - means) / sds
