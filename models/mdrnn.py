"""M of World Models: an LSTM whose mixture-density head predicts the next latent.

P(z_{t+1} | z_t, a_t, h_t) is, for every latent dimension separately, a mixture of K
Gaussians with that dimension's own mixture weights (Ha & Schmidhuber 2018, section 2.2).
Reward and done heads read the same hidden state. The step-wise `imagine` runs the very
same nn.LSTM on a length-1 sequence, so sequence training and stepping share weights and
agree exactly.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.noise import Noise, TorchNoise, categorical
from models.world_model import State

LOG_SIGMA_MIN, LOG_SIGMA_MAX = -7.0, 2.0  # sigma bounded: no collapse to a spike, no blow-up


@dataclass(frozen=True)
class MDRNNConfig:
    z_size: int = 32
    action_size: int = 3
    hidden_size: int = 256
    gaussians: int = 5
    reward_weight: float = 1.0
    done_weight: float = 1.0

    def to_dict(self) -> dict:
        return asdict(self)


def gmm_nll(z: torch.Tensor, mu: torch.Tensor, log_sigma: torch.Tensor, logit_pi: torch.Tensor) -> torch.Tensor:
    """-log p(z) per element under per-dimension mixtures; mixture parameters (..., Z, K)."""
    z = z.unsqueeze(-1)
    log_normal = -0.5 * ((z - mu) / log_sigma.exp()).pow(2) - log_sigma - 0.5 * math.log(2 * math.pi)
    return -torch.logsumexp(logit_pi.log_softmax(-1) + log_normal, dim=-1)


class MDRNN(nn.Module):
    def __init__(self, cfg: MDRNNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.z_size, self.action_size = cfg.z_size, cfg.action_size
        self.feature_size = cfg.z_size + cfg.hidden_size
        self.rnn = nn.LSTM(cfg.z_size + cfg.action_size, cfg.hidden_size, batch_first=True)
        self.mdn = nn.Linear(cfg.hidden_size, 3 * cfg.z_size * cfg.gaussians + 2)

    def heads(self, h: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Mixture (mu, log_sigma, logit_pi, each (..., Z, K)), reward and done logit from h."""
        out = self.mdn(h)
        Z, K = self.cfg.z_size, self.cfg.gaussians
        mix = out[..., :-2].unflatten(-1, (3, Z, K))
        log_sigma = mix[..., 1, :, :].clamp(LOG_SIGMA_MIN, LOG_SIGMA_MAX)
        return mix[..., 0, :, :], log_sigma, mix[..., 2, :, :], out[..., -2], out[..., -1]

    def forward(self, z: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Whole sequences (B, T, .) from zero state: heads at every step."""
        h, _ = self.rnn(torch.cat([z, a], -1))
        return self.heads(h)

    def loss(
        self, z: torch.Tensor, a: torch.Tensor, reward: torch.Tensor, done: torch.Tensor,
        mask: torch.Tensor, next_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """z: (B, T+1, Z) latents; a, reward, done, mask: (B, T). next_mask marks steps whose
        z_{t+1} lies inside the episode (the last step of an episode has none)."""
        mu, log_sigma, logit_pi, r_hat, d_logit = self(z[:, :-1], a)
        nll = gmm_nll(z[:, 1:], mu, log_sigma, logit_pi).mean(-1)
        n, nn_ = mask.sum().clamp(min=1), next_mask.sum().clamp(min=1)
        gmm = (nll * next_mask).sum() / nn_
        mse = ((r_hat - reward).pow(2) * mask).sum() / n
        bce = (F.binary_cross_entropy_with_logits(d_logit, done, reduction="none") * mask).sum() / n
        loss = gmm + self.cfg.reward_weight * mse + self.cfg.done_weight * bce
        return loss, {"loss": loss.detach(), "gmm": gmm.detach(), "reward": mse.detach(), "done": bce.detach()}

    # --- the world-model interface -------------------------------------------------------
    def initial_state(self, batch: int) -> State:
        p = next(self.parameters())
        zeros = p.new_zeros(batch, self.cfg.hidden_size)
        return {"h": zeros, "c": zeros, "z": p.new_zeros(batch, self.z_size)}

    def _advance(self, state: State, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([state["z"], a], -1).unsqueeze(1)
        _, (h, c) = self.rnn(x, (state["h"].unsqueeze(0), state["c"].unsqueeze(0)))
        return h[0], c[0]

    def observe(self, state: State, z: torch.Tensor, a_prev: torch.Tensor | None) -> State:
        if a_prev is None:
            return {**state, "z": z}
        h, c = self._advance(state, a_prev)
        return {"h": h, "c": c, "z": z}

    def imagine(
        self, state: State, a: torch.Tensor, temperature: float = 1.0, noise: Noise | None = None
    ) -> tuple[State, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample z_{t+1}: tau divides the mixture logits and scales sigma by sqrt(tau) (Ha)."""
        noise = noise or TorchNoise()
        h, c = self._advance(state, a)
        mu, log_sigma, logit_pi, r_hat, d_logit = self.heads(h)
        k = categorical(logit_pi / temperature, noise.uniform(mu.shape[:-1], h.device))
        pick = lambda t: t.gather(-1, k.unsqueeze(-1)).squeeze(-1)  # noqa: E731
        eps = noise.normal(k.shape, h.device)
        z = pick(mu) + pick(log_sigma).exp() * math.sqrt(temperature) * eps
        return {"h": h, "c": c, "z": z}, z, r_hat, torch.sigmoid(d_logit)

    def features(self, state: State) -> torch.Tensor:
        return torch.cat([state["z"], state["h"]], -1)
