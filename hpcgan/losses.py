"""Adversarial losses on discriminator logits, and the WGAN gradient penalty."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def d_loss(kind: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Discriminator loss from logits on real and generated samples (means over the batch)."""
    if kind == "ns":
        return F.softplus(-real).mean() + F.softplus(fake).mean()
    if kind == "hinge":
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    if kind == "wgan-gp":
        return fake.mean() - real.mean()
    raise ValueError(f"unknown loss {kind}")


def g_loss(kind: str, fake: torch.Tensor) -> torch.Tensor:
    """Generator loss from the discriminator's logits on generated samples."""
    if kind == "ns":
        return F.softplus(-fake).mean()
    return -fake.mean()  # hinge and WGAN: raise the critic's score


def gradient_penalty(
    D: Callable[[torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    eps: torch.Tensor,
) -> torch.Tensor:
    """WGAN-GP: mean (||grad_x D(x)|| - 1)^2 at points between real and fake samples.

    ``D`` maps images to logits [N]. ``eps`` [N] comes from the caller so every rank and every
    resume draws the same numbers. Only input gradients are taken here (no parameter
    gradients accumulate, so Horovod's hooks do not fire before the real backward).
    """
    e = eps.view(-1, 1, 1, 1).to(real.dtype)
    x = (e * real.detach() + (1 - e) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(D(x).sum(), x, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


def r1_penalty(logits_real: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): mean ||grad_x D(x)||^2 on real samples.

    ``real`` must have required grad when ``logits_real`` was computed. A mean over samples,
    so with gradients averaged over ranks it is the global-batch mean at any world size.
    """
    (grad,) = torch.autograd.grad(logits_real.float().sum(), real, create_graph=True)
    return grad.float().square().sum(dim=(1, 2, 3)).mean()


def radial_power(x: torch.Tensor) -> torch.Tensor:
    """Batch-mean radially averaged power spectrum of [N, C, H, W] maps, [min(H, W) // 2]
    bins for k = 1 .. min(H, W) // 2 (differentiable; k = 0, the mean, is left out)."""
    h, w = x.shape[-2:]
    power = torch.fft.rfft2(x.float()).abs().square().mean(dim=(0, 1)) / (h * w)  # [H, W//2+1]
    kx = torch.fft.fftfreq(h, d=1.0 / h, device=x.device)[:, None]
    ky = torch.fft.rfftfreq(w, d=1.0 / w, device=x.device)[None, :]
    ring = torch.hypot(kx, ky).round().long().flatten()
    bins = min(h, w) // 2 + 1
    keep = ring < bins
    sums = torch.zeros(bins, device=x.device).index_add(0, ring[keep], power.flatten()[keep])
    counts = torch.bincount(ring[keep], minlength=bins).clamp_min(1)
    return (sums / counts)[1:]


def spectral_loss(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of log power spectra of a generated and a real batch: pulls G
    towards the data's spatial statistics at every scale (and away from the checkerboard
    peaks of strided transposed convolutions)."""
    eps = 1e-12
    target = radial_power(real.detach()).clamp_min(eps).log()
    return (radial_power(fake).clamp_min(eps).log() - target).square().mean()
