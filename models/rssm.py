"""M as Dreamer's recurrent state-space model (Hafner et al., PlaNet / DreamerV2).

The state is a deterministic GRU state h and a stochastic state s, Gaussian or a set of
categoricals. The prior p(s_t | h_t) is what the dream samples; the posterior
q(s_t | h_t, z_t) also sees V's latent z_t. Heads on [h_t, s_t] give z_t (decoded by V for
pictures), the reward of the step that led into t and whether it ended the episode.

Alignment with the MDN-RNN: `imagine(state_t, a_t)` advances h with a_t, samples s_{t+1}
from the prior and returns z_{t+1}, r_t and p(done_t) read from [h_{t+1}, s_{t+1}].
`observe` uses the posterior's mode (mean or argmax), so real-env runs are deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.mixture import Count, done_bce, local_count
from models.noise import Noise, TorchNoise, categorical
from models.world_model import State

MIN_STD = 0.1  # Dreamer's floor on the Gaussian state's std


@dataclass(frozen=True)
class RSSMConfig:
    z_size: int = 32
    action_size: int = 3
    deter: int = 200
    stoch: int = 30  # Gaussian dimensions, or number of categoricals when classes > 0
    classes: int = 0  # 0: Gaussian s; else `stoch` categoricals of `classes` classes (DreamerV2: 32 x 32)
    hidden_size: int = 200  # width of the MLPs around the GRU
    free_nats: float = 1.0
    kl_balance: float = 0.8  # weight of the KL term that trains the prior (DreamerV2)
    kl_weight: float = 1.0
    reward_weight: float = 1.0
    done_weight: float = 1.0
    done_pos_weight: float = 1.0  # weight of done = 1 steps in the done loss (Ha's Doom: 10)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def s_size(self) -> int:
        return self.stoch * max(self.classes, 1)


def gaussian_kl(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """KL(q || p) of diagonal Gaussians given as (..., 2, D) [mean, std], summed over D."""
    (mq, sq), (mp, sp) = q.unbind(-2), p.unbind(-2)
    return (torch.log(sp / sq) + (sq.pow(2) + (mq - mp).pow(2)) / (2 * sp.pow(2)) - 0.5).sum(-1)


def categorical_kl(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """KL(q || p) of independent categoricals given as logits (..., groups, classes), summed."""
    lq, lp = q.log_softmax(-1), p.log_softmax(-1)
    return (lq.exp() * (lq - lp)).sum((-2, -1))


KL = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def balanced_kl(
    post: torch.Tensor, prior: torch.Tensor, kl: KL, balance: float, free_nats: float, mask: torch.Tensor,
    count: Count = local_count,
) -> tuple[torch.Tensor, torch.Tensor]:
    """DreamerV2's KL balancing with free nats: the prior moves towards the posterior with
    weight `balance`, the posterior towards the prior with 1 - balance; each term, averaged
    over the valid steps (count(mask) of them), counts at least `free_nats` (no gradient
    below). Returns (loss, KL)."""
    n = count(mask)
    mean = lambda x: (x * mask).sum() / n  # noqa: E731
    to_prior = mean(kl(post.detach(), prior))
    to_post = mean(kl(post, prior.detach()))
    loss = balance * to_prior.clamp(min=free_nats) + (1 - balance) * to_post.clamp(min=free_nats)
    return loss, to_post.detach()


class RSSM(nn.Module):
    def __init__(self, cfg: RSSMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.z_size, self.action_size = cfg.z_size, cfg.action_size
        self.feature_size = cfg.deter + cfg.s_size
        stats = cfg.s_size if cfg.classes else 2 * cfg.stoch
        H = cfg.hidden_size
        self.inp = nn.Sequential(nn.Linear(cfg.s_size + cfg.action_size, H), nn.ELU())
        self.gru = nn.GRUCell(H, cfg.deter)
        self.prior_net = nn.Sequential(nn.Linear(cfg.deter, H), nn.ELU(), nn.Linear(H, stats))
        self.post_net = nn.Sequential(nn.Linear(cfg.deter + cfg.z_size, H), nn.ELU(), nn.Linear(H, stats))
        mlp = lambda n: nn.Sequential(nn.Linear(self.feature_size, H), nn.ELU(), nn.Linear(H, n))  # noqa: E731
        # one MLP per head, as in Dreamer: sharing one with z's 32 outputs starved the rare rewards
        self.z_head, self.reward_head, self.done_head = mlp(cfg.z_size), mlp(1), mlp(1)

    # --- distributions over s: (..., 2, stoch) [mean, std] or (..., stoch, classes) logits ---
    def _dist(self, out: torch.Tensor) -> torch.Tensor:
        if self.cfg.classes:
            return out.unflatten(-1, (self.cfg.stoch, self.cfg.classes))
        mean, std = out.chunk(2, -1)
        return torch.stack([mean, F.softplus(std) + MIN_STD], -2)

    def _kl(self, q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return categorical_kl(q, p) if self.cfg.classes else gaussian_kl(q, p)

    def _rsample(self, d: torch.Tensor) -> torch.Tensor:
        """A reparameterised sample (straight-through one-hots for categoricals), flattened."""
        if self.cfg.classes:
            probs = d.softmax(-1)
            u = torch.rand(d.shape[:-1], device=d.device)
            hard = F.one_hot(categorical(d, u), self.cfg.classes).to(probs)
            return (hard + probs - probs.detach()).flatten(-2)
        return d[..., 0, :] + d[..., 1, :] * torch.randn_like(d[..., 0, :])

    def _mode(self, d: torch.Tensor) -> torch.Tensor:
        if self.cfg.classes:
            return F.one_hot(d.argmax(-1), self.cfg.classes).to(d).flatten(-2)
        return d[..., 0, :]

    def _sample(self, d: torch.Tensor, temperature: float, noise: Noise) -> torch.Tensor:
        """What the dream draws: logits / tau, or std * sqrt(tau) as for the MDN-RNN."""
        if self.cfg.classes:
            logits = d / temperature
            hard = F.one_hot(categorical(logits, noise.uniform(d.shape[:-1], d.device)), self.cfg.classes).to(d)
            if torch.is_grad_enabled():  # straight through, so an actor's gradient can cross the dream
                probs = logits.softmax(-1)
                hard = hard + probs - probs.detach()
            return hard.flatten(-2)
        eps = noise.normal(d[..., 0, :].shape, d.device)
        return d[..., 0, :] + d[..., 1, :] * math.sqrt(temperature) * eps

    # --- pieces shared by training and the interface --------------------------------------
    def _step(self, h: torch.Tensor, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return self.gru(self.inp(torch.cat([s, a], -1)), h)

    def _posterior(self, h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self._dist(self.post_net(torch.cat([h, z], -1)))

    def heads(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z, reward and done logit from [h, s]."""
        return self.z_head(feat), self.reward_head(feat)[..., 0], self.done_head(feat)[..., 0]

    def loss(
        self, z: torch.Tensor, a: torch.Tensor, reward: torch.Tensor, done: torch.Tensor,
        mask: torch.Tensor, next_mask: torch.Tensor, count: Count = local_count,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """z: (B, T+1, Z); a, reward, done, mask, next_mask: (B, T) and count as for the MDN-RNN.
        Where z_{t+1} lies past the episode's end, s_{t+1} comes from the prior, which is
        what the dream has there too."""
        cfg = self.cfg
        B, T = a.shape[:2]
        h = z.new_zeros(B, cfg.deter)
        post = self._posterior(h, z[:, 0])
        s = self._rsample(post)
        posts, priors, feats = [post], [self._dist(self.prior_net(h))], [torch.cat([h, s], -1)]
        for t in range(T):
            h = self._step(h, s, a[:, t])
            prior, post = self._dist(self.prior_net(h)), self._posterior(h, z[:, t + 1])
            inside = next_mask[:, t].view(B, 1)
            s = torch.where(inside > 0, self._rsample(post), self._rsample(prior))
            posts.append(post)
            priors.append(prior)
            feats.append(torch.cat([h, s], -1))
        post, prior, feat = torch.stack(posts, 1), torch.stack(priors, 1), torch.stack(feats, 1)
        z_hat, r_hat, d_logit = self.heads(feat)
        seen = torch.cat([mask[:, :1], next_mask], 1)  # steps whose z is real: t = 0 and z_{t+1} inside
        n_seen, n = count(seen), count(mask)
        z_loss = ((z_hat - z).pow(2).sum(-1) * seen).sum() / n_seen / 2  # unit-variance Gaussian NLL
        kl_loss, kl = balanced_kl(post, prior, self._kl, cfg.kl_balance, cfg.free_nats, seen, count)
        mse = ((r_hat[:, 1:] - reward).pow(2) * mask).sum() / n
        bce = done_bce(d_logit[:, 1:], done, mask, n, cfg.done_pos_weight)
        loss = z_loss + cfg.kl_weight * kl_loss + cfg.reward_weight * mse + cfg.done_weight * bce
        return loss, {"loss": loss.detach(), "z": z_loss.detach(), "kl": kl, "reward": mse.detach(),
                      "done": bce.detach()}

    # --- the world-model interface -------------------------------------------------------
    def initial_state(self, batch: int) -> State:
        p = next(self.parameters())
        return {"h": p.new_zeros(batch, self.cfg.deter), "s": p.new_zeros(batch, self.cfg.s_size)}

    def observe(self, state: State, z: torch.Tensor, a_prev: torch.Tensor | None) -> State:
        h = state["h"] if a_prev is None else self._step(state["h"], state["s"], a_prev)
        return {"h": h, "s": self._mode(self._posterior(h, z))}

    def imagine(
        self, state: State, a: torch.Tensor, temperature: float = 1.0, noise: Noise | None = None
    ) -> tuple[State, torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self._step(state["h"], state["s"], a)
        s = self._sample(self._dist(self.prior_net(h)), temperature, noise or TorchNoise())
        z, r_hat, d_logit = self.heads(torch.cat([h, s], -1))
        return {"h": h, "s": s}, z, r_hat, torch.sigmoid(d_logit)

    def randomize(self, state: State, noise: Noise | None = None) -> State:
        """The state as it is: no dream dropout: one M for every dream."""
        return state

    def features(self, state: State) -> torch.Tensor:
        return torch.cat([state["h"], state["s"]], -1)
