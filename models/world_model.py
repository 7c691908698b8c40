"""The one interface every controller talks to, whatever M is (DESIGN section 6).

A state is a dict of tensors with a leading batch dimension. The real-env loop calls
`observe` with each real z; the dream loop calls `imagine` instead; the controller only
ever sees `features(state)`. Actions enter M as vectors: one-hot for discrete spaces.
"""

from __future__ import annotations

from typing import Protocol

import torch

from models.noise import Noise

State = dict[str, torch.Tensor]


class WorldModel(Protocol):
    z_size: int
    action_size: int
    feature_size: int

    def initial_state(self, batch: int) -> State:
        """State before the first observation."""

    def observe(self, state: State, z: torch.Tensor, a_prev: torch.Tensor | None) -> State:
        """Filter: take in the real z_t after the action a_{t-1} (None at t = 0)."""

    def imagine(
        self, state: State, a: torch.Tensor, temperature: float = 1.0, noise: Noise | None = None
    ) -> tuple[State, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Dream one step under action a_t: (next state, z_{t+1}, reward_t, p(done_t)).
        noise: where sampling draws from (None: torch's global generator)."""

    def randomize(self, state: State, noise: Noise | None = None) -> State:
        """The state of a dream with its own variant of M (Dropout's Dream Land), drawn from
        noise once and kept by every later `imagine`; `state` itself where M has none."""

    def features(self, state: State) -> torch.Tensor:
        """What the controller sees, e.g. [z, h] for the MDN-RNN."""
