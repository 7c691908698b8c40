"""C of World Models: one linear layer from M's features to the action (Ha & Schmidhuber).

The parameters are a flat vector (what CMA-ES searches over), so a whole population acts
in one batched product: row b of `features` is read with row b of `params`.

Action mapping:
- continuous Box: a = low + (tanh(W f + b) + 1) / 2 * (high - low), which is tanh itself
  for a [-1, 1] box and always lies inside the box;
- Discrete(n): n outputs y = W f + b and a = argmax(y) (ties go to the lowest index), or,
  with `sample`, a ~ softmax(y): the search then starts from a near-uniform random policy
  instead of deterministic ones that bump into walls; on GridWorld its selection scores
  were higher than the argmax's (RESULTS.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol

import gymnasium as gym
import torch
import torch.nn.functional as F

from models.noise import Noise, TorchNoise, categorical


class Controller(Protocol):
    """What the real-env and dream loops need of any C: actions from M's features and a
    flat parameter vector (CMA-ES's candidate, or the actor's weights)."""

    def act(self, features: torch.Tensor, params: torch.Tensor, noise: Noise | None = None) -> torch.Tensor:
        """features (B, F), params (B, P) or (P,) -> env actions: (B,) long or (B, A) float."""

    def m_input(self, actions: torch.Tensor) -> torch.Tensor:
        """Env actions as M consumes them: one-hot rows for discrete spaces."""


@dataclass(frozen=True)
class ControllerConfig:
    feature_size: int
    outputs: int
    discrete: bool
    low: tuple[float, ...] = ()
    high: tuple[float, ...] = ()
    sample: bool = False  # discrete only: a ~ softmax(W f + b) instead of the argmax

    @classmethod
    def for_space(cls, feature_size: int, space: gym.Space, sample: bool = False) -> ControllerConfig:
        if isinstance(space, gym.spaces.Discrete):
            return cls(feature_size, int(space.n), True, sample=sample)
        if isinstance(space, gym.spaces.Box) and len(space.shape) == 1 and space.is_bounded():
            return cls(feature_size, space.shape[0], False,
                       tuple(float(x) for x in space.low), tuple(float(x) for x in space.high))
        raise ValueError(f"the linear controller needs a Discrete or bounded 1-D Box action space, not {space}")

    @property
    def n_params(self) -> int:
        return (self.feature_size + 1) * self.outputs

    def to_dict(self) -> dict:
        return asdict(self)


class LinearController:
    def __init__(self, cfg: ControllerConfig) -> None:
        self.cfg = cfg

    def act(self, features: torch.Tensor, params: torch.Tensor, noise: Noise | None = None) -> torch.Tensor:
        """features (B, F) and params (B, P) or (P,) -> env actions: (B,) long or (B, A) float.
        noise: where a sampling controller draws from (None: torch's global generator)."""
        cfg = self.cfg
        params = params.to(features).expand(len(features), cfg.n_params)
        W = params[:, : cfg.feature_size * cfg.outputs].view(-1, cfg.feature_size, cfg.outputs)
        b = params[:, cfg.feature_size * cfg.outputs :]
        y = torch.einsum("bf,bfo->bo", features, W) + b
        if cfg.discrete and cfg.sample:
            return categorical(y, (noise or TorchNoise()).uniform((len(y),), y.device))
        if cfg.discrete:
            return y.argmax(-1)
        low, high = y.new_tensor(cfg.low), y.new_tensor(cfg.high)
        return low + (torch.tanh(y) + 1) / 2 * (high - low)

    def m_input(self, actions: torch.Tensor) -> torch.Tensor:
        return as_m_input(actions, self.cfg.discrete, self.cfg.outputs)


def as_m_input(actions: torch.Tensor, discrete: bool, n: int) -> torch.Tensor:
    """Env actions as M consumes them: one-hot rows for discrete spaces (as in the latent cache)."""
    return F.one_hot(actions, n).float() if discrete else actions.float()
