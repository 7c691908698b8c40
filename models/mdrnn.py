"""M of World Models: an LSTM whose mixture-density head predicts the next latent.

P(z_{t+1} | z_t, a_t, h_t) is, for every latent dimension separately, a mixture of K
Gaussians with that dimension's own mixture weights (Ha & Schmidhuber 2018, section 2.2).
Reward and done heads read the same hidden state. The step-wise `observe` and `imagine`
run the nn.LSTM's own weights as a cell, so sequence training and stepping share weights
and agree to float rounding.

Dropout's Dream Land (Wellmer & Kwok 2021): with `dropout` > 0, M trains with one dropout
mask per training window on the z part of its input and on h before its heads, and every
dream draws its own pair of masks and keeps it to the end (`randomize`), so C meets many
slightly different Ms instead of one M's particular errors. The real-env filter (`observe`)
never drops anything. Their M drops h inside the recurrence; here it is dropped
before the heads, which keeps nn.LSTM's fused kernel for training.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from models import mixture
from models.mixture import Count, MixtureHead, Prediction, local_count
from models.noise import Noise, TorchNoise
from models.world_model import State


@dataclass(frozen=True)
class MDRNNConfig:
    z_size: int = 32
    action_size: int = 3
    hidden_size: int = 256
    gaussians: int = 5
    head_units: int = 0  # reward and done: 0 linear (Ha), N an MLP of N units (models/mixture.py)
    reward_weight: float = 1.0
    done_weight: float = 1.0
    done_pos_weight: float = 1.0  # weight of done = 1 steps in the done loss (Ha's Doom: 10)
    dropout: float = 0.0  # Dropout's Dream Land (Wellmer & Kwok: 0.05); 0 is Ha's M

    def to_dict(self) -> dict:
        return asdict(self)


class MDRNN(nn.Module):
    def __init__(self, cfg: MDRNNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.z_size, self.action_size = cfg.z_size, cfg.action_size
        self.feature_size = cfg.z_size + cfg.hidden_size
        self.rnn = nn.LSTM(cfg.z_size + cfg.action_size, cfg.hidden_size, batch_first=True)
        self.mdn = MixtureHead(cfg.hidden_size, cfg.z_size, cfg.gaussians, cfg.head_units)

    def forward(self, z: torch.Tensor, a: torch.Tensor, noise: Noise | None = None) -> Prediction:
        """Whole sequences (B, T, .) from zero state: heads at every step. noise: where a
        training sequence's dropout masks come from (one row each; None: torch's generator)."""
        keep_h = None
        if self.training and self.cfg.dropout > 0:
            masks = self._masks(len(z), z.device, noise)
            z, keep_h = z * masks["keep_z"][:, None], masks["keep_h"][:, None]
        x = torch.cat([z, a], -1)
        # CPU autocast sends the LSTM to oneDNN in bf16, which fails on CPUs without native bf16
        # (AVX2-only ones: "could not create a primitive descriptor"): on CPUs it stays float32
        with torch.autocast("cpu", enabled=False):
            h, _ = self.rnn(x.float() if x.is_cpu else x)
        return self.mdn(h if keep_h is None else h * keep_h)

    def _keep(self, u: torch.Tensor) -> torch.Tensor:
        """Inverted dropout's mask from uniform numbers u: 0 with chance p, else 1 / (1 - p)."""
        p = self.cfg.dropout
        return (u >= p).to(u.dtype) / (1 - p)

    def loss(
        self, z: torch.Tensor, a: torch.Tensor, reward: torch.Tensor, done: torch.Tensor,
        mask: torch.Tensor, next_mask: torch.Tensor, count: Count = local_count, noise: Noise | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """z: (B, T+1, Z) latents; a, reward, done, mask: (B, T). next_mask marks steps whose
        z_{t+1} lies inside the episode (the last step of an episode has none). count: the
        masked means' denominator, passed in by data-parallel training (mixture.prediction_loss);
        noise: the dropout masks' per-row source, which data-parallel training also passes."""
        return mixture.prediction_loss(self(z[:, :-1], a, noise), z[:, 1:], reward, done, mask, next_mask,
                                       self.cfg.reward_weight, self.cfg.done_weight, self.cfg.done_pos_weight, count)

    # --- the world-model interface -------------------------------------------------------
    def initial_state(self, batch: int) -> State:
        p = next(self.parameters())
        zeros = p.new_zeros(batch, self.cfg.hidden_size)
        return {"h": zeros, "c": zeros, "z": p.new_zeros(batch, self.z_size)}

    def _advance(self, state: State, a: torch.Tensor, keep_z: torch.Tensor | None = None,
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step of self.rnn's layer as an LSTM cell: the same weights and arithmetic, but
        nn.LSTM's call on a length-1 sequence costs 0.8 ms at LSTM 512 on one CPU thread
        against the cell's 0.3 (batch 1) to 0.6 (batch 16)."""
        rnn, z = self.rnn, state["z"]
        if keep_z is not None:
            z = z * keep_z
        return torch.lstm_cell(torch.cat([z, a], -1), (state["h"], state["c"]),
                               rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0)

    def observe(self, state: State, z: torch.Tensor, a_prev: torch.Tensor | None) -> State:
        if a_prev is None:
            return {"h": state["h"], "c": state["c"], "z": z}
        h, c = self._advance(state, a_prev)
        return {"h": h, "c": c, "z": z}

    def imagine(
        self, state: State, a: torch.Tensor, temperature: float = 1.0, noise: Noise | None = None
    ) -> tuple[State, torch.Tensor, torch.Tensor, torch.Tensor]:
        h, c = self._advance(state, a, state.get("keep_z"))
        masks = {k: v for k, v in state.items() if k.startswith("keep_")}
        p = self.mdn(h * masks["keep_h"] if masks else h)
        z = mixture.sample(p, temperature, noise or TorchNoise())
        return {**masks, "h": h, "c": c, "z": z}, z, p.reward, torch.sigmoid(p.done_logit)

    def randomize(self, state: State, noise: Noise | None = None) -> State:
        """This dream's own M: dropout masks drawn once from each row's noise and kept by
        every later `imagine`. Without dropout, the state as it is."""
        if self.cfg.dropout == 0:
            return state
        return {**state, **self._masks(state["h"].shape[0], state["h"].device, noise)}

    def _masks(self, batch: int, device: torch.device, noise: Noise | None) -> State:
        """A pair of float32 dropout masks per row, for z and for h."""
        noise = noise or TorchNoise()
        return {"keep_z": self._keep(noise.uniform((batch, self.z_size), device)),
                "keep_h": self._keep(noise.uniform((batch, self.cfg.hidden_size), device))}

    def features(self, state: State) -> torch.Tensor:
        return torch.cat([state["z"], state["h"]], -1)
