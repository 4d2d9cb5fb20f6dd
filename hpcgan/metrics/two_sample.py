"""Classifier two-sample test (C2ST): can a small CNN tell generated from real samples?

A classifier is trained on one half of each set (even positions) to tell them apart and scored
on the other half (odd positions); the ROC AUC of its scores is the metric: 0.5 = the sets are
indistinguishable to it, 1 = always told apart (docs/evaluation.md, "Classifier two-sample
test"). It is trained twice, on two views of the samples (``VIEWS``): the samples
themselves and their Laplacian, i.e. their small-scale structure, which the first view misses
(wrapping around periodic axes only, so a non-periodic grid's edges never meet in a seam)
(grf recipe: AUC 0.67 on the samples, 1.00 on their Laplacian, floors 0.50); the evaluator
reports the larger AUC. Its noise floor is the same test between two sets of real samples.
The network, its training and the split are fixed and seeded, so the AUC is a pure function of
the two sets: the evaluator gathers the samples in a fixed order to the ranks that train (results
do not depend on the number of ranks).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hpcgan import nd

SAMPLES = 1000  # per side by default: 500 + 500 to train, 500 + 500 to score
SAMPLE_BYTES = 32 * 1024 * 1024  # ...and at most this much float32 per side (big volumes)
EPOCHS, BATCH, LR = 12, 64, 1e-3
WIDTHS = (16, 32, 64, 64)


class TwoSampleNet(nn.Module):
    """Four stride-2 3x3 convolutions (16-64 channels) with LeakyReLU, global average pooling
    and one logit; layers of the samples' spatial rank (hpcgan.nd: 1-D vectors too). Any grid:
    each convolution maps a side s to ceil(s / 2) >= 1 (45x16x9 -> .. -> 3x1x1) and the
    pooling averages what is left. No batch norm: a score must depend on its sample only."""

    def __init__(self, channels: int, ndim: int) -> None:
        super().__init__()
        ops = nd.ops(ndim)
        layers: list[nn.Module] = []
        for c_in, c_out in zip((channels, *WIDTHS[:-1]), WIDTHS):
            layers += [ops.conv(c_in, c_out, 3, 2, 1), nn.LeakyReLU(0.2)]
        self.body = nn.Sequential(*layers, ops.adaptive_avg_pool(1), nn.Flatten())
        self.head = nn.Linear(WIDTHS[-1], 1)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """Samples [N, C, *S] -> logits [N] (high = generated)."""
        return self.head(self.body(y))[:, 0]


def sample_count(shape: tuple[int, ...], wanted: int = SAMPLES) -> int:
    """Samples per side for samples of ``shape`` (C, *S): ``wanted``, fewer for big volumes."""
    return max(0, min(wanted, SAMPLE_BYTES // (4 * int(np.prod(shape)))))


VIEWS = ("samples", "laplacian")


def laplacian(x: torch.Tensor, periodic: tuple[bool, ...] | None = None) -> torch.Tensor:
    """The discrete Laplacian of samples [N, C, *S] along every spatial axis: the sum over
    axes of x[i-1] + x[i+1] - 2 x[i]. On a periodic axis (``periodic[a]``; None: all) the
    neighbours wrap around; on the others the difference is taken where both neighbours exist
    and is 0 on the first and last cells, so the two edges never meet in a seam."""
    dims = range(2, x.dim())
    periodic = (True,) * len(dims) if periodic is None else tuple(periodic)
    return sum(n for d, p in zip(dims, periodic) for n in _neighbours(x, d, p)) - 2 * len(dims) * x


def _neighbours(x: torch.Tensor, dim: int, periodic: bool) -> tuple[torch.Tensor, ...]:
    """The two neighbours of every cell along ``dim``; without wrapping, an edge cell counts
    itself twice (its second difference along ``dim`` is then 0)."""
    if periodic:
        return torch.roll(x, 1, dim), torch.roll(x, -1, dim)
    size = x.shape[dim]
    if size < 3:
        return (2 * x,)
    inner = x.narrow(dim, 0, size - 2) + x.narrow(dim, 2, size - 2)  # [.., size - 2, ..]
    first, last = x.narrow(dim, 0, 1), x.narrow(dim, size - 1, 1)
    return (torch.cat([2 * first, inner, 2 * last], dim),)


def auc(
    real: torch.Tensor,
    fake: torch.Tensor,
    seed: int = 0,
    epochs: int = EPOCHS,
    view: str = "samples",
    periodic: tuple[bool, ...] | None = None,
) -> float:
    """ROC AUC of a classifier trained on the even-position samples of ``real`` and ``fake``
    ([N, C, *S] each, in the networks' coordinate: log space for positive fields) and scored on
    the odd ones; it sees the samples or their :func:`laplacian` (``view``; wrapping around the
    ``periodic`` axes, None: all). Inputs are
    standardised by the mean and std of the real training half. Deterministic for given sets
    and seed; NaN when a side has fewer than 4 samples."""
    if min(len(real), len(fake)) < 4:
        return float("nan")
    device = real.device
    real, fake = real.float(), fake.float()
    if view == "laplacian":
        real, fake = laplacian(real, periodic), laplacian(fake, periodic)
    mean, std = real[0::2].mean(), real[0::2].std().clamp_min(1e-12)
    train_x = (torch.cat([real[0::2], fake[0::2]]) - mean) / std
    train_t = torch.cat([torch.zeros(len(real[0::2])), torch.ones(len(fake[0::2]))]).to(device)
    # Its own random stream: a C2ST during training must not change the GAN run's RNG state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = TwoSampleNet(real.shape[1], real.dim() - 2).to(device)
        opt = torch.optim.Adam(net.parameters(), lr=LR)
        for _ in range(epochs):
            order = torch.randperm(len(train_x)).to(device)
            for batch in order.split(BATCH):
                loss = F.binary_cross_entropy_with_logits(net(train_x[batch]), train_t[batch])
                opt.zero_grad()
                loss.backward()
                opt.step()
    net.eval()
    with torch.no_grad():
        scores = [net((s[1::2] - mean) / std).cpu() for s in (real, fake)]
    labels = np.r_[np.zeros(len(scores[0])), np.ones(len(scores[1]))]
    from sklearn.metrics import roc_auc_score  # lazily: see hpcgan.metrics

    return float(roc_auc_score(labels, torch.cat(scores).double().numpy()))
