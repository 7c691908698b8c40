"""Learning C in imagination, as Dreamer does (Hafner et al. 2020, 2021, 2023).

From posterior states of real sequences, the actor drives M for `horizon` imagined steps.
Lambda-returns mix the predicted rewards with the slow target critic's values, discounted
by gamma times M's predicted continuation, so an imagined episode end cuts the return.
The critic regresses on those returns (stop-gradient); the actor maximises them, either
by backpropagating through M (continuous actions, or straight-through one-hots) or by
REINFORCE with the critic as baseline (discrete actions). M's weights are frozen here:
gradients pass through it but its parameters never change.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from models.actor_critic import Actor, Critic
from models.vae import VAE
from models.world_model import State, WorldModel
from utils.distributed import average_gradients, mean_over_ranks
from utils.precision import Precision


def lambda_return(reward: torch.Tensor, value: torch.Tensor, discount: torch.Tensor, lam: float) -> torch.Tensor:
    """TD(lambda) targets, all along the first axis: reward and discount (H, ...) for steps
    0..H-1, value (H+1, ...) for states 0..H. R_H = v_H and
    R_k = r_k + d_k ((1 - lam) v_{k+1} + lam R_{k+1}): a mix of the n-step returns of step k
    with weights (1 - lam) lam^(n-1), and lam^(H-k-1) on the longest, which sum to one."""
    out, R = [], value[-1]
    for k in reversed(range(len(reward))):
        R = reward[k] + discount[k] * ((1 - lam) * value[k + 1] + lam * R)
        out.append(R)
    return torch.stack(out[::-1])


class ReturnScale:
    """DreamerV3's return normalisation: returns are divided by max(1, P95 - P5), with the
    percentiles tracked by an exponential moving average, so the actor's loss has one scale
    whatever the env's rewards are, while small returns are not blown up."""

    def __init__(self, decay: float = 0.99) -> None:
        self.decay, self.low, self.high = decay, None, None

    def update(self, returns: torch.Tensor) -> torch.Tensor:
        q = torch.quantile(returns.detach().flatten().float(), returns.new_tensor([0.05, 0.95]))
        q = mean_over_ranks({"low": q[0], "high": q[1]})  # under torchrun, the same scale on every rank
        if self.low is None:
            self.low, self.high = q["low"], q["high"]
        else:
            self.low = self.decay * self.low + (1 - self.decay) * q["low"]
            self.high = self.decay * self.high + (1 - self.decay) * q["high"]
        return (self.high - self.low).clamp(min=1.0)

    def state_dict(self) -> dict:
        return {"low": self.low, "high": self.high}

    def load_state_dict(self, d: dict) -> None:
        self.low, self.high = d["low"], d["high"]


@dataclass(frozen=True)
class ImaginationSettings:
    horizon: int = 15
    gamma: float = 0.99
    lam: float = 0.95
    actor_lr: float = 8e-5
    critic_lr: float = 8e-5
    entropy: float = 1e-3  # weight of the actor's entropy bonus
    grad_clip: float = 100.0
    target_mix: float = 0.02  # the target critic moves this fraction towards the critic each update
    reinforce: bool = False  # the actor's gradient: REINFORCE (discrete only) instead of through M
    normalize_returns: bool = False
    temperature: float = 1.0  # tau of M while imagining
    survival: bool = False  # reward +1 per imagined step alive instead of M's reward head


class Trajectory(NamedTuple):
    features: torch.Tensor  # (H+1, N, F): states 0..H
    reward: torch.Tensor  # (H, N)
    discount: torch.Tensor  # (H, N): gamma * p(continue) after step k
    log_prob: torch.Tensor  # (H, N)
    entropy: torch.Tensor  # (H, N)


@torch.no_grad()
def posterior_starts(m: WorldModel, vae: VAE, stats: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor) -> State:
    """M's filtered state at every real step of a batch of sequences, as one flat batch:
    stats (B, T, S) V-statistics, actions (B, T, A) as M takes them, mask (B, T) real steps."""
    B, T = mask.shape
    z = vae.sample(stats.flatten(0, 1), mean=True).unflatten(0, (B, T))
    state, states = m.initial_state(B), []
    for t in range(T):
        state = m.observe(state, z[:, t], actions[:, t - 1] if t else None)
        states.append(state)
    keep = mask.transpose(0, 1).flatten() > 0  # rows in (t, b) order
    return {k: torch.cat([s[k] for s in states])[keep] for k in state}


class ImaginationLearner:
    """One update: imagine from start states, then step the critic and the actor."""

    def __init__(
        self, m: WorldModel, actor: Actor, critic: Critic, s: ImaginationSettings, amp: str = "none",
    ) -> None:
        """amp: the imagined rollouts (M and the actor) run under mixed precision; returns,
        losses and the critic stay float32."""
        if s.reinforce and not actor.cfg.discrete:
            raise ValueError("REINFORCE is for discrete actions; continuous actors learn through M")
        assert isinstance(m, nn.Module)
        self.m, self.actor, self.critic, self.s = m, actor, critic, s
        m.requires_grad_(False)  # gradients flow through M's computations, never into its weights
        self.target = copy.deepcopy(critic).requires_grad_(False)
        self.actor_opt = torch.optim.Adam(actor.parameters(), lr=s.actor_lr, eps=1e-5)
        self.critic_opt = torch.optim.Adam(critic.parameters(), lr=s.critic_lr, eps=1e-5)
        self.scale = ReturnScale()
        self.precision = Precision(amp, next(actor.parameters()).device)

    def imagine(self, start: State) -> Trajectory:
        """The actor's dream: the actor sees stop-gradient features (as in DreamerV2); with
        REINFORCE nothing but the log-probabilities keeps a graph."""
        s = self.s
        state, feats, rewards, discounts, logps, ents = self.m.randomize(start), [], [], [], [], []
        with torch.set_grad_enabled(not s.reinforce):
            for _ in range(s.horizon):
                f = self.m.features(state)
                feats.append(f)
                with torch.enable_grad():
                    act = self.actor.sample(f.detach())
                m_input = act.m_input.detach() if s.reinforce else act.m_input
                state, _, r, p_done = self.m.imagine(state, m_input, s.temperature)
                rewards.append(torch.ones_like(r) if s.survival else r)
                discounts.append(s.gamma * (1 - p_done))
                logps.append(act.log_prob)
                ents.append(act.entropy)
            feats.append(self.m.features(state))
        return Trajectory(*(torch.stack(x) for x in (feats, rewards, discounts, logps, ents)))

    def update(self, start: State) -> dict[str, float]:
        s = self.s
        self.m.eval()
        with self.precision.autocast():
            tr = self.imagine(start)
        tr = Trajectory(*(x.float() for x in tr))
        value = self.target(tr.features)  # grads reach the features (and the actor through M), not the target
        R = lambda_return(tr.reward, value, tr.discount, s.lam)
        # the weight of step k: the probability that the imagined episode is still running
        alive = torch.cat([torch.ones_like(tr.discount[:1]), tr.discount[:-1] / s.gamma]).cumprod(0).detach()
        scale = self.scale.update(R) if s.normalize_returns else R.new_tensor(1.0)
        if s.reinforce:
            advantage = ((R - value[:-1]) / scale).detach()
            objective = tr.log_prob * advantage
        else:
            objective = R / scale
        actor_loss = -(alive * (objective + s.entropy * tr.entropy)).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        self.precision.backward(actor_loss)
        average_gradients(self.actor.parameters())
        self.precision.unscale(self.actor_opt)
        actor_norm = nn.utils.clip_grad_norm_(self.actor.parameters(), s.grad_clip)
        self.precision.step(self.actor_opt)

        v = self.critic(tr.features[:-1].detach())
        critic_loss = 0.5 * (alive * (v - R.detach()).pow(2)).mean()
        self.critic_opt.zero_grad(set_to_none=True)
        self.precision.backward(critic_loss)
        average_gradients(self.critic.parameters())
        self.precision.unscale(self.critic_opt)
        nn.utils.clip_grad_norm_(self.critic.parameters(), s.grad_clip)
        self.precision.step(self.critic_opt)
        self.precision.update()
        with torch.no_grad():
            for t, c in zip(self.target.parameters(), self.critic.parameters(), strict=True):
                t.lerp_(c, s.target_mix)
        out = {"actor_loss": actor_loss, "critic_loss": critic_loss, "return": R.mean(), "value": v.mean(),
               "entropy": tr.entropy.mean(), "reward": tr.reward.mean(), "alive": alive[-1].mean(),
               "actor_grad_norm": actor_norm, "scale": scale}
        out = mean_over_ranks({k: torch.as_tensor(x).detach() for k, x in out.items()})
        return {k: float(x) for k, x in out.items()}

    def state_dict(self) -> dict:
        return {"actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
                "target": self.target.state_dict(), "actor_opt": self.actor_opt.state_dict(),
                "critic_opt": self.critic_opt.state_dict(), "scale": self.scale.state_dict(),
                "scaler": self.precision.state_dict()}

    def load_state_dict(self, d: dict) -> None:
        self.actor.load_state_dict(d["actor"])
        self.critic.load_state_dict(d["critic"])
        self.target.load_state_dict(d["target"])
        self.actor_opt.load_state_dict(d["actor_opt"])
        self.critic_opt.load_state_dict(d["critic_opt"])
        self.scale.load_state_dict(d["scale"])
        self.precision.load_state_dict(d.get("scaler", {}))
