"""The training objective: a named adversarial loss plus the terms the config adds to it.

A :class:`Loss` gives D's loss from its logits on real and generated samples and G's loss from
its logits on generated ones; :data:`LOSSES` maps each ``train.loss`` name to one (adding a loss
is one class and one entry; hpcgan.config offers the names as the key's choices, and
:func:`get_loss` refuses any other). Penalties and extra losses are :class:`Term` objects that
:func:`build` picks from the config: the auxiliary classifier (AC-GAN) and the spectral term
are computed with the adversarial loss under autocast; the gradient penalty, lazy R1, the
weight penalties and the total-response term after it, in full precision. The physics terms
on continuous conditions (the condition regression and the total response) are documented in
docs/training.md, "Physics terms". The Trainer adds them in that fixed order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from hpcgan import nd, spectrum
from hpcgan.condition import Condition, ConditionSpec
from hpcgan.errors import UserError

if TYPE_CHECKING:
    from hpcgan.config import TrainConfig

# -- adversarial losses ---------------------------------------------------------------------


class Loss:
    """One adversarial objective on logits [n]; means over the batch."""

    gradient_penalty = False  # WGAN-GP: the critic's gradient penalty comes with the loss

    def d(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """D's loss from its logits on real and on generated samples."""
        raise NotImplementedError

    def g(self, fake: torch.Tensor) -> torch.Tensor:
        """G's loss from D's logits on generated samples."""
        raise NotImplementedError


class NonSaturating(Loss):
    """Goodfellow et al. (2014), with G maximising log D(G(z))."""

    def d(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return F.softplus(-real).mean() + F.softplus(fake).mean()

    def g(self, fake: torch.Tensor) -> torch.Tensor:
        return F.softplus(-fake).mean()


class Hinge(Loss):
    """Lim & Ye (2017); G raises the critic's score."""

    def d(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()

    def g(self, fake: torch.Tensor) -> torch.Tensor:
        return -fake.mean()


class WassersteinGP(Loss):
    """Gulrajani et al. (2017): the Wasserstein critic, with its gradient penalty."""

    gradient_penalty = True

    def d(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return fake.mean() - real.mean()

    def g(self, fake: torch.Tensor) -> torch.Tensor:
        return -fake.mean()


class LeastSquares(Loss):
    """LSGAN (Mao et al. 2017) with targets a = 0 (fake), b = c = 1 (real): least squares on
    the logits, whose gradients do not vanish for samples far on the right side."""

    def d(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((real - 1).square().mean() + fake.square().mean())

    def g(self, fake: torch.Tensor) -> torch.Tensor:
        return 0.5 * (fake - 1).square().mean()


LOSSES: dict[str, type[Loss]] = {
    "ns": NonSaturating,
    "hinge": Hinge,
    "wgan-gp": WassersteinGP,
    "lsgan": LeastSquares,
}


def get_loss(name: str) -> Loss:
    """The loss named ``name`` (train.loss)."""
    if name not in LOSSES:
        raise UserError(f"train.loss={name} is not a known loss; one of: {', '.join(LOSSES)}")
    return LOSSES[name]()


# -- penalties ------------------------------------------------------------------------------


def gradient_penalty(
    D: Callable[[torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    eps: torch.Tensor,
) -> torch.Tensor:
    """WGAN-GP: mean (||grad_x D(x)|| - 1)^2 at points between real and fake samples.

    ``D`` maps samples [N, C, *S] to logits [N]. ``eps`` [N] comes from the caller so every
    rank and every resume draws the same numbers. Only input gradients are taken here (no
    parameter gradients accumulate, so Horovod's hooks do not fire before the real backward).
    """
    e = nd.per_sample(eps, real).to(real.dtype)  # [N, 1, ...]
    x = (e * real.detach() + (1 - e) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(D(x).sum(), x, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


def r1_penalty(logits_real: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): mean ||grad_x D(x)||^2 on real samples.

    ``real`` must have required grad when ``logits_real`` was computed. A mean over samples,
    so with gradients averaged over ranks it is the global-batch mean at any world size.
    """
    (grad,) = torch.autograd.grad(logits_real.float().sum(), real, create_graph=True)
    return grad.float().square().sum(dim=nd.non_batch_dims(grad)).mean()


def spectral_loss(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of log power spectra of a generated and a real batch: pulls G
    towards the data's spatial statistics at every scale (and away from the checkerboard
    peaks of strided transposed convolutions). The spectrum is the metric's
    (hpcgan.spectrum), so the loss optimises what eval/ps_rel_err measures."""
    eps = 1e-12
    target = spectrum.radial_power(real.detach()).clamp_min(eps).log()
    return (spectrum.radial_power(fake).clamp_min(eps).log() - target).square().mean()


def g_space_deposit(x: torch.Tensor) -> torch.Tensor:
    """G's output in [-1, 1] mapped to [0, 1]: a deposit that is 0 at the floor. The total's
    units when no data transform is given (unit tests of the term alone)."""
    return (x.float() + 1) / 2


def log_total(
    x: torch.Tensor, decode: Callable[[torch.Tensor], torch.Tensor] = g_space_deposit
) -> torch.Tensor:
    """log of a sample's total [n]: ``decode`` (the data transform's, to the data's units)
    summed over channels and positions."""
    deposit = decode(x).float()
    tiny = torch.finfo(torch.float32).tiny
    return deposit.sum(dim=nd.non_batch_dims(x)).clamp_min(tiny).log()


def response(total: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """How ``total`` [n] follows ``values`` [n, K]: the coefficients [K + 1] of its ridge
    regression on (1, values) and the spread (standard deviation) of its residuals."""
    A = torch.cat([torch.ones_like(total)[:, None], values.float()], dim=1)  # [n, K + 1]
    ridge = 1e-3 * torch.eye(A.shape[1], dtype=A.dtype, device=A.device)
    # solve_ex without its error check: no host synchronisation (the ridge keeps it regular)
    beta = torch.linalg.solve_ex(A.T @ A + ridge, A.T @ total, check_errors=False)[0]
    spread = (total - A @ beta).square().mean().add(1e-12).sqrt()
    return beta, spread


def total_response_loss(
    fake: torch.Tensor,
    real: torch.Tensor,
    values: torch.Tensor,
    decode: Callable[[torch.Tensor], torch.Tensor] = g_space_deposit,
) -> torch.Tensor:
    """Squared differences of the response of the log total (in the units ``decode`` gives)
    to the conditions (mean line and spread around it) between a generated batch and the real
    batch whose conditions it was made at (docs/training.md, "Physics terms")."""
    beta_f, spread_f = response(log_total(fake, decode), values)
    with torch.no_grad():
        beta_r, spread_r = response(log_total(real, decode), values)
    return (beta_f - beta_r).square().sum() + (spread_f - spread_r).square()


def weight_penalty(module: nn.Module, l1: float, l2: float) -> torch.Tensor:
    """l1 * sum|w| + l2 * sum w^2 over weight matrices and kernels (not biases or norms)."""
    weights = [p for p in module.parameters() if p.dim() > 1]
    return sum(l1 * w.abs().sum() + l2 * w.square().sum() for w in weights)


# -- terms ----------------------------------------------------------------------------------


@dataclass
class DBatch:
    """What D's terms see of one discriminator update (this rank's slice of batch ``key``)."""

    key: int  # global batch index
    real: torch.Tensor  # [n, C, *S]
    cond_real: Condition  # labels [n], values [n, K]: the real samples'
    fake: torch.Tensor  # [n, C, *S], detached
    cond_fake: Condition  # those G was given
    logits_real: torch.Tensor  # [n]
    logits_fake: torch.Tensor
    aux_real: torch.Tensor | None  # [n, classes] class logits of the AC-GAN head
    aux_fake: torch.Tensor | None
    values_real: torch.Tensor | None  # [n, K] D's regression of the conditions
    module: nn.Module  # D itself (eager): weight penalties
    critic: Callable[[torch.Tensor], torch.Tensor]  # samples -> eager D's logits on cond_real
    uniform: Callable[[], torch.Tensor]  # [n] uniform numbers of this batch for penalties


@dataclass
class GBatch:
    """What G's terms see of one generator update."""

    fake: torch.Tensor  # [n, C, *S]
    cond_fake: Condition  # the real batch's values (and drawn classes)
    real: torch.Tensor  # [n, C, *S] the last D update's real batch
    logits: torch.Tensor  # [n] D's logits on fake
    aux: torch.Tensor | None  # [n, classes]
    values: torch.Tensor | None  # [n, K] D's regression of the conditions on fake
    module: nn.Module  # G: weight penalties


class Term:
    """Something added to D's and/or G's loss; None where it adds nothing (that side, or
    that step)."""

    autocast = True  # computed with the adversarial loss under autocast (else after it)

    def input_grad(self, key: int) -> bool:
        """Whether D's update on batch ``key`` needs the gradient of D at the real samples."""
        return False

    def d(self, b: DBatch) -> torch.Tensor | None:
        return None

    def g(self, b: GBatch) -> torch.Tensor | None:
        return None


class AuxClassifier(Term):
    """AC-GAN (Odena et al. 2017): D classifies both halves, G is rewarded for its class."""

    def __init__(self, weight: float) -> None:
        self.weight = weight

    def d(self, b: DBatch) -> torch.Tensor:
        return self.weight * (
            F.cross_entropy(b.aux_real.float(), b.cond_real.labels)
            + F.cross_entropy(b.aux_fake.float(), b.cond_fake.labels)
        )

    def g(self, b: GBatch) -> torch.Tensor:
        return self.weight * F.cross_entropy(b.aux.float(), b.cond_fake.labels)


class Spectral(Term):
    """G matches the real batch's radially averaged power spectrum (:func:`spectral_loss`)."""

    def __init__(self, weight: float) -> None:
        self.weight = weight

    def g(self, b: GBatch) -> torch.Tensor:
        return self.weight * spectral_loss(b.fake, b.real)


class ConditionRegression(Term):
    """3DGAN's energy head: D regresses the encoded conditions of real samples (MSE); G is
    rewarded when D's regression on its samples matches the conditions it was given."""

    def __init__(self, weight: float) -> None:
        self.weight = weight

    def d(self, b: DBatch) -> torch.Tensor:
        return self.weight * F.mse_loss(b.values_real.float(), b.cond_real.values.float())

    def g(self, b: GBatch) -> torch.Tensor:
        return self.weight * F.mse_loss(b.values.float(), b.cond_fake.values.float())


class TotalResponse(Term):
    """3DGAN's ECAL-sum term: G matches how a sample's log total, in the data's units
    (``decode``: the data transform's), follows its conditions (:func:`total_response_loss`)."""

    autocast = False  # a small linear solve, in full precision

    def __init__(self, weight: float, decode: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.weight, self.decode = weight, decode

    def g(self, b: GBatch) -> torch.Tensor:
        return self.weight * total_response_loss(b.fake, b.real, b.cond_fake.values, self.decode)


class GradientPenalty(Term):
    """WGAN-GP's penalty on D, at points drawn between real and generated samples."""

    autocast = False  # its double backward counts in the "forward" section, as R1's

    def __init__(self, weight: float) -> None:
        self.weight = weight

    def d(self, b: DBatch) -> torch.Tensor:
        return self.weight * gradient_penalty(b.critic, b.real, b.fake, b.uniform())


class LazyR1(Term):
    """Lazy R1 (StyleGAN2): every ``every`` D updates, weighted by ``every``."""

    autocast = False

    def __init__(self, gamma: float, every: int) -> None:
        self.gamma, self.every = gamma, every

    def input_grad(self, key: int) -> bool:
        return key % self.every == 0

    def d(self, b: DBatch) -> torch.Tensor | None:
        if not self.input_grad(b.key):
            return None
        return (self.gamma / 2) * self.every * r1_penalty(b.logits_real, b.real)


class WeightPenalty(Term):
    """L1 and L2 penalties on the weights of the network being updated (both G and D)."""

    autocast = False

    def __init__(self, l1: float, l2: float) -> None:
        self.l1, self.l2 = l1, l2

    def d(self, b: DBatch) -> torch.Tensor:
        return weight_penalty(b.module, self.l1, self.l2)

    def g(self, b: GBatch) -> torch.Tensor:
        return weight_penalty(b.module, self.l1, self.l2)


# -- the objective --------------------------------------------------------------------------


class Objective:
    """A loss and its terms; each phase asks for its loss in two parts, under autocast and
    after it. Terms are added one at a time in list order (the floating-point order)."""

    def __init__(self, loss: Loss, terms: list[Term]) -> None:
        self.loss, self.terms = loss, terms

    def input_grad(self, key: int) -> bool:
        """Whether D's update on batch ``key`` differentiates D at the real samples (R1)."""
        return any(term.input_grad(key) for term in self.terms)

    def _add(self, loss: torch.Tensor, side: str, b: DBatch | GBatch, autocast: bool):
        for term in self.terms:
            if term.autocast == autocast:
                value = getattr(term, side)(b)
                if value is not None:
                    loss = loss + value
        return loss

    def d_loss(self, b: DBatch) -> torch.Tensor:
        """D's loss and the terms computed with it (call under autocast)."""
        return self._add(self.loss.d(b.logits_real, b.logits_fake), "d", b, autocast=True)

    def d_penalties(self, loss: torch.Tensor, b: DBatch) -> torch.Tensor:
        """``loss`` plus D's terms computed after autocast."""
        return self._add(loss, "d", b, autocast=False)

    def g_loss(self, b: GBatch) -> torch.Tensor:
        """G's loss and the terms computed with it (call under autocast)."""
        return self._add(self.loss.g(b.logits), "g", b, autocast=True)

    def g_penalties(self, loss: torch.Tensor, b: GBatch) -> torch.Tensor:
        """``loss`` plus G's terms computed after autocast."""
        return self._add(loss, "g", b, autocast=False)


def build(
    t: TrainConfig,
    spec: ConditionSpec | None = None,
    decode: Callable[[torch.Tensor], torch.Tensor] = g_space_deposit,
) -> Objective:
    """The objective that the ``train.*`` keys describe for models conditioned on ``spec``,
    whose samples ``decode`` maps to the data's units (the total-response term's totals); an
    unknown loss, or a term on continuous conditions that the models lack, is a UserError."""
    loss = get_loss(t.loss)
    terms: list[Term] = []
    if t.aux_classifier:
        terms.append(AuxClassifier(t.aux_weight))
    if (t.cond_regression > 0 or t.total_weight > 0) and not (spec and spec.dim):
        raise UserError(
            "train.cond_regression and train.total_weight need a dataset with /conditions "
            "(and model.condition other than none)"
        )
    if t.cond_regression > 0:
        terms.append(ConditionRegression(t.cond_regression))
    if t.total_weight > 0:
        terms.append(TotalResponse(t.total_weight, decode))
    if t.spectral_weight > 0:
        terms.append(Spectral(t.spectral_weight))
    if loss.gradient_penalty:
        terms.append(GradientPenalty(t.gp_weight))
    if t.r1_gamma > 0:
        terms.append(LazyR1(t.r1_gamma, t.r1_every))
    if t.l1 or t.l2:
        terms.append(WeightPenalty(t.l1, t.l2))
    return Objective(loss, terms)
