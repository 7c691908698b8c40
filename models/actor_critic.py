"""C as Dreamer's actor and critic: small MLPs on M's features (Hafner et al. 2020, 2021).

The actor gives a bounded action distribution: a tanh-squashed Gaussian rescaled into the
action box for continuous spaces, a categorical for discrete ones. Its samples come in two
forms: the env action, and the vector M consumes (the action itself, or a one-hot with a
straight-through gradient, so gradients can flow through M into the logits).

`ActorController` lets the trained actor act wherever the linear controller acts (real
episodes, dreams, worker processes): it reads the actor's weights from one flat vector,
which is what checkpoints hold and workers receive.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import gymnasium as gym
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from models.controller import as_m_input
from models.noise import Noise, TorchNoise, categorical

MIN_STD, INIT_STD = 0.1, 1.0  # Dreamer's bounds on the Gaussian's std before the tanh
EPS = 1e-6


@dataclass(frozen=True)
class ActorConfig:
    feature_size: int
    outputs: int  # classes (discrete) or action dimensions (continuous)
    discrete: bool
    low: tuple[float, ...] = ()
    high: tuple[float, ...] = ()
    hidden_size: int = 200
    layers: int = 2
    sample: bool = False  # act with a sample in real episodes and dreams instead of the mode
    kind: str = "actor"  # tells checkpoints of this C from the linear controller's

    @classmethod
    def for_space(cls, feature_size: int, space: gym.Space, **kw) -> ActorConfig:
        if isinstance(space, gym.spaces.Discrete):
            return cls(feature_size, int(space.n), True, **kw)
        if isinstance(space, gym.spaces.Box) and len(space.shape) == 1 and space.is_bounded():
            return cls(feature_size, space.shape[0], False, tuple(float(x) for x in space.low),
                       tuple(float(x) for x in space.high), **kw)
        raise ValueError(f"the actor needs a Discrete or bounded 1-D Box action space, not {space}")

    def to_dict(self) -> dict:
        return asdict(self)


def mlp(inputs: int, hidden: int, layers: int, outputs: int) -> nn.Sequential:
    mods: list[nn.Module] = []
    for i in range(layers):
        mods += [nn.Linear(inputs if i == 0 else hidden, hidden), nn.LayerNorm(hidden), nn.ELU()]
    return nn.Sequential(*mods, nn.Linear(hidden if layers else inputs, outputs))


class ActionSample(NamedTuple):
    env: torch.Tensor  # what the env gets: (B,) long or (B, A) float inside the box
    m_input: torch.Tensor  # what M gets: (B, A) float, differentiable
    log_prob: torch.Tensor  # (B,)
    entropy: torch.Tensor  # (B,): exact for a categorical, -log_prob for the squashed Gaussian


class Actor(nn.Module):
    def __init__(self, cfg: ActorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        out = cfg.outputs if cfg.discrete else 2 * cfg.outputs
        self.net = mlp(cfg.feature_size, cfg.hidden_size, cfg.layers, out)
        if not cfg.discrete:
            self.register_buffer("low", torch.tensor(cfg.low), persistent=False)
            self.register_buffer("high", torch.tensor(cfg.high), persistent=False)

    def _gaussian(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, raw = self.net(f).chunk(2, -1)
        shift = math.log(math.exp(INIT_STD - MIN_STD) - 1)  # softplus(shift) + MIN_STD = INIT_STD at raw 0
        return mean, F.softplus(raw + shift) + MIN_STD

    def _to_box(self, y: torch.Tensor) -> torch.Tensor:
        return self.low + (y + 1) / 2 * (self.high - self.low)

    def sample(self, f: torch.Tensor, noise: Noise | None = None) -> ActionSample:
        """A reparameterised draw (straight-through one-hot for discrete actions)."""
        noise = noise or TorchNoise()
        if self.cfg.discrete:
            logits = self.net(f)
            logp_all = logits.log_softmax(-1)
            k = categorical(logits, noise.uniform((len(f),), f.device))
            probs = logp_all.exp()
            one_hot = F.one_hot(k, self.cfg.outputs).to(probs)
            entropy = -(probs * logp_all).sum(-1)
            return ActionSample(k, one_hot + probs - probs.detach(), logp_all.gather(-1, k[:, None])[:, 0], entropy)
        mean, std = self._gaussian(f)
        u = mean + std * noise.normal(mean.shape, f.device)
        y = torch.tanh(u)
        log_prob = (-0.5 * ((u - mean) / std).pow(2) - std.log() - 0.5 * math.log(2 * math.pi)
                    - torch.log1p(-y.pow(2) + EPS)).sum(-1)
        a = self._to_box(y)
        return ActionSample(a, a, log_prob, -log_prob)

    def mode(self, f: torch.Tensor) -> torch.Tensor:
        """The most likely action, as the env takes it."""
        if self.cfg.discrete:
            return self.net(f).argmax(-1)
        return self._to_box(torch.tanh(self._gaussian(f)[0]))


class Critic(nn.Module):
    """v(features): the expected lambda-return from an imagined state."""

    def __init__(self, feature_size: int, hidden_size: int, layers: int) -> None:
        super().__init__()
        self.net = mlp(feature_size, hidden_size, layers, 1)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.net(f)[..., 0]


class ActorController:
    """The actor behind the controller interface: act(features, params, noise), where params
    is the actor's flat weight vector, (P,) or identical (B, P) rows."""

    def __init__(self, cfg: ActorConfig) -> None:
        self.cfg = cfg
        self.actor = Actor(cfg).requires_grad_(False)
        self._loaded: torch.Tensor | None = None

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.actor.parameters())

    def _load(self, params: torch.Tensor) -> None:
        if params.dim() == 2:
            if not torch.equal(params, params[:1].expand_as(params)):
                raise ValueError("the actor acts with one weight vector: the rows of params differ")
            params = params[0]
        if self._loaded is None or not torch.equal(self._loaded, params):
            self.actor.to(params.device)
            vector_to_parameters(params, self.actor.parameters())
            self._loaded = params.clone()

    def act(self, features: torch.Tensor, params: torch.Tensor, noise: Noise | None = None) -> torch.Tensor:
        self._load(params.to(features))
        if self.cfg.sample:
            return self.actor.sample(features, noise).env
        return self.actor.mode(features)

    def m_input(self, actions: torch.Tensor) -> torch.Tensor:
        return as_m_input(actions, self.cfg.discrete, self.cfg.outputs)


def flat_params(module: nn.Module) -> torch.Tensor:
    return parameters_to_vector(module.parameters()).detach().cpu().clone()
