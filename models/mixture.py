"""The mixture-density head shared by the MDN-RNN and the TSSM (Ha & Schmidhuber 2018, 2.2).

One linear layer turns M's output into, for every latent dimension separately, a mixture
of K Gaussians with that dimension's own weights, plus a reward and a done logit. Keeping
the likelihood, the loss and the dream's sampling here means both M train and dream alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from models.noise import Noise, categorical

LOG_SIGMA_MIN, LOG_SIGMA_MAX = -7.0, 2.0  # sigma bounded: no collapse to a spike, no blow-up

Count = Callable[[torch.Tensor], torch.Tensor]  # mask -> the denominator of its masked mean


def local_count(mask: torch.Tensor) -> torch.Tensor:
    """mask.sum() (at least 1): the denominator of a masked mean over this process's batch.
    A loss takes its count function from the caller, so that data-parallel training can pass
    utils.distributed.count_per_rank (the ranks' mean count) without models/ importing utils/."""
    return mask.sum().detach().float().clamp(min=1)


class Prediction(NamedTuple):
    mu: torch.Tensor  # (..., Z, K)
    log_sigma: torch.Tensor  # (..., Z, K)
    logit_pi: torch.Tensor  # (..., Z, K)
    reward: torch.Tensor  # (...)
    done_logit: torch.Tensor  # (...)


def gmm_nll(z: torch.Tensor, mu: torch.Tensor, log_sigma: torch.Tensor, logit_pi: torch.Tensor) -> torch.Tensor:
    """-log p(z) per element under per-dimension mixtures; mixture parameters (..., Z, K).
    log pi is folded into a second logsumexp rather than taken by log_softmax, which torch's
    CPU kernel runs several times slower over a last axis as short as K."""
    z = z.unsqueeze(-1)
    log_normal = -0.5 * ((z - mu) / log_sigma.exp()).pow(2) - log_sigma - 0.5 * math.log(2 * math.pi)
    return torch.logsumexp(logit_pi, dim=-1) - torch.logsumexp(logit_pi + log_normal, dim=-1)


class MixtureHead(nn.Linear):
    """A linear layer read as a Prediction (a plain Linear's weights, so checkpoints load).

    head_units 0 reads reward and done off that same layer, as Ha does. N > 0 gives them
    their own two-layer MLP of N units, as Dreamer's heads are: on GridWorld a linear readout
    of the LSTM's state barely told goal steps from hazard steps (predicted rewards 0.30 and
    -0.04), an MLP on the same states did (0.64 and -0.38)."""

    def __init__(self, in_size: int, z_size: int, gaussians: int, head_units: int = 0) -> None:
        super().__init__(in_size, 3 * z_size * gaussians + (0 if head_units else 2))
        self.z_size, self.gaussians = z_size, gaussians
        self.scalars = None if not head_units else nn.Sequential(
            nn.Linear(in_size, head_units), nn.ELU(), nn.Linear(head_units, head_units), nn.ELU(),
            nn.Linear(head_units, 2))

    def forward(self, x: torch.Tensor) -> Prediction:
        out = super().forward(x)
        if self.scalars is None:
            out, scalars = out[..., :-2], out[..., -2:]
        else:
            scalars = self.scalars(x)
        mix = out.unflatten(-1, (3, self.z_size, self.gaussians))
        log_sigma = mix[..., 1, :, :].clamp(LOG_SIGMA_MIN, LOG_SIGMA_MAX)
        return Prediction(mix[..., 0, :, :], log_sigma, mix[..., 2, :, :], scalars[..., 0], scalars[..., 1])


def prediction_loss(
    p: Prediction, z_next: torch.Tensor, reward: torch.Tensor, done: torch.Tensor, mask: torch.Tensor,
    next_mask: torch.Tensor, reward_weight: float, done_weight: float, done_pos_weight: float = 1.0,
    count: Count = local_count,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mixture NLL of z_{t+1} where it lies inside the episode (next_mask), reward MSE and
    done BCE on every real step (mask); all (B, T) but z_next (B, T, Z). count: each masked
    mean's denominator (local_count; count_per_rank for a rank's share of a global batch)."""
    nll = gmm_nll(z_next, p.mu, p.log_sigma, p.logit_pi).mean(-1)
    n, n_next = count(mask), count(next_mask)
    gmm = (nll * next_mask).sum() / n_next
    mse = ((p.reward - reward).pow(2) * mask).sum() / n
    bce = done_bce(p.done_logit, done, mask, n, done_pos_weight)
    loss = gmm + reward_weight * mse + done_weight * bce
    return loss, {"loss": loss.detach(), "gmm": gmm.detach(), "reward": mse.detach(), "done": bce.detach()}


def done_bce(logit: torch.Tensor, done: torch.Tensor, mask: torch.Tensor, n: torch.Tensor,
             pos_weight: float) -> torch.Tensor:
    """Done BCE over the masked steps, the rare done = 1 steps weighted pos_weight times (Ha's
    Doom M: 10). The dream ends an episode when p(done) > 0.5; with weight w the trained p
    crosses 0.5 once the true chance of the end exceeds 1 / (1 + w), so deaths M is unsure
    of still happen in the dream instead of being smoothed away by the unweighted loss."""
    w = 1 + (pos_weight - 1) * done
    return (F.binary_cross_entropy_with_logits(logit, done, reduction="none") * w * mask).sum() / n


def sample(p: Prediction, temperature: float, noise: Noise) -> torch.Tensor:
    """Draw z_{t+1}: tau divides the mixture logits and scales sigma by sqrt(tau) (Ha)."""
    k = categorical(p.logit_pi / temperature, noise.uniform(p.mu.shape[:-1], p.mu.device))
    pick = lambda t: t.gather(-1, k.unsqueeze(-1)).squeeze(-1)  # noqa: E731
    eps = noise.normal(k.shape, p.mu.device)
    return pick(p.mu) + pick(p.log_sigma).exp() * math.sqrt(temperature) * eps
