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
