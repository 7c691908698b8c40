"""V: the convolutional VAE of World Models (Ha & Schmidhuber 2018, appendix A.1).

Encoder: four stride-2 4x4 convolutions (32, 64, 128, 256 channels) to 2x2x256, then z.
Decoder: z to a 1x1x1024 map and four stride-2 transposed convolutions (kernels 5, 5, 6, 6)
back to 64x64x3. With z = 32 that is about 4.35M parameters.

Latents are Gaussian by default. `discrete=True` makes z a set of `latent_size`
categorical variables with `classes` classes each, sampled as one-hot vectors with
straight-through gradients (DreamerV2); z is then their flattened one-hots.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.noise import Noise, categorical


@dataclass(frozen=True)
class VAEConfig:
    latent_size: int = 32
    width: int = 32  # channels of the first conv; Ha uses 32, tests use less
    discrete: bool = False
    classes: int = 32
    kl_tolerance: float = 0.5  # free nats per latent dimension (Ha: 0.5)
    recon: str = "mse"  # "mse" (Ha) or "bce", see VAE.loss

    @property
    def z_size(self) -> int:
        return self.latent_size * self.classes if self.discrete else self.latent_size

    def to_dict(self) -> dict:
        return asdict(self)


class VAE(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.encoder = nn.Sequential(
            nn.Conv2d(3, w, 4, 2), nn.ReLU(),
            nn.Conv2d(w, 2 * w, 4, 2), nn.ReLU(),
            nn.Conv2d(2 * w, 4 * w, 4, 2), nn.ReLU(),
            nn.Conv2d(4 * w, 8 * w, 4, 2), nn.ReLU(),
            nn.Flatten(),
        )
        enc_out = 8 * w * 2 * 2
        n_stats = cfg.latent_size * cfg.classes if cfg.discrete else 2 * cfg.latent_size
        self.to_stats = nn.Linear(enc_out, n_stats)
        self.from_z = nn.Linear(cfg.z_size, enc_out)
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(enc_out, 4 * w, 5, 2), nn.ReLU(),
            nn.ConvTranspose2d(4 * w, 2 * w, 5, 2), nn.ReLU(),
            nn.ConvTranspose2d(2 * w, w, 6, 2), nn.ReLU(),
            nn.ConvTranspose2d(w, 3, 6, 2), nn.Sigmoid(),
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent statistics of frames x (B, 3, 64, 64) in [0, 1]: [mu, logvar] or logits."""
        return self.to_stats(self.encoder(x))

    def class_probs(self, stats: torch.Tensor) -> torch.Tensor:
        """Categorical probabilities (..., latent_size, classes), mixed with 1% uniform as in
        DreamerV3: a saturated softmax would stop the straight-through gradient for good."""
        cfg = self.cfg
        logits = stats.view(*stats.shape[:-1], cfg.latent_size, cfg.classes)
        return 0.99 * logits.softmax(-1) + 0.01 / cfg.classes

    def sample(self, stats: torch.Tensor, mean: bool = False, noise: Noise | None = None) -> torch.Tensor:
        """z from statistics: reparameterised Gaussian, or straight-through one-hots.
        noise: where the draws come from, one row per batch row (None: torch's generator)."""
        cfg = self.cfg
        if cfg.discrete:
            probs = self.class_probs(stats)
            if mean:
                idx = probs.argmax(-1)
            elif noise is not None:
                idx = categorical(probs.log(), noise.uniform(tuple(probs.shape[:-1]), probs.device))
            else:
                idx = torch.multinomial(probs.reshape(-1, cfg.classes), 1).view(probs.shape[:-1])
            onehot = F.one_hot(idx, cfg.classes).to(probs.dtype)
            return (onehot + probs - probs.detach()).flatten(-2)
        mu, logvar = stats.chunk(2, -1)
        if mean:
            return mu
        eps = torch.randn_like(mu) if noise is None else noise.normal(tuple(mu.shape), mu.device)
        return mu + eps * (0.5 * logvar).exp()

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h = self.from_z(z)
        return self.decoder(h.view(*h.shape, 1, 1))

    def kl(self, stats: torch.Tensor) -> torch.Tensor:
        """KL(q(z|x) || prior) per frame, summed over latent dimensions."""
        cfg = self.cfg
        if cfg.discrete:
            logp = self.class_probs(stats).log()
            uniform = -torch.log(torch.tensor(float(cfg.classes), device=stats.device))
            return (logp.exp() * (logp - uniform)).sum((-2, -1))
        mu, logvar = stats.chunk(2, -1)
        return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(-1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        stats = self.encode(x)
        return self.decode(self.sample(stats)), stats

    def loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Ha's objective: summed squared error plus KL clamped below at tolerance * dims.

        With "bce" the reconstruction term is the binary cross-entropy instead: on frames of
        flat saturated colours (GridWorld) the squared error's gradient vanishes through the
        output sigmoid and the decoder sits on the mean frame for thousands of steps.
        """
        recon, stats = self(x)
        if self.cfg.recon == "bce":
            rec = F.binary_cross_entropy(recon, x, reduction="none").sum((1, 2, 3)).mean()
        else:
            rec = (recon - x).pow(2).sum((1, 2, 3)).mean()
        kl = self.kl(stats).mean()
        free = self.cfg.kl_tolerance * self.cfg.latent_size
        loss = rec + torch.clamp(kl, min=free)
        return loss, {"loss": loss.detach(), "recon": rec.detach(), "kl": kl.detach()}


def frames_to_tensor(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 64, 64, 3) to float (B, 3, 64, 64) in [0, 1], on the frames' device: the only
    place frames leave uint8, so data stays small until the batch (move the uint8 frames to
    the device first: utils.device.to_device)."""
    return frames.permute(0, 3, 1, 2).float().div_(255)
