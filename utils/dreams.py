"""Open-loop dreams: a few real frames as context, then M imagines the rest under the real
actions, decoded by V. Written as GIFs with rows truth / imagined / difference."""

from __future__ import annotations

from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import torch

from data.latents import Latents
from models.vae import VAE
from models.world_model import WorldModel


@torch.no_grad()
def open_loop(
    vae: VAE, m: WorldModel, stats: np.ndarray, actions: np.ndarray, context: int,
    temperature: float, device: torch.device,
) -> np.ndarray:
    """Frames (T, 64, 64, 3) uint8: V's reconstructions for t < context, dreams after."""
    s = torch.as_tensor(np.array(stats), device=device)  # a copy: the cache's memory maps are read-only
    a = torch.as_tensor(np.array(actions), device=device)
    state, zs = m.initial_state(1), []
    for t in range(len(s)):
        if t < context:
            z = vae.sample(s[t : t + 1], mean=True)
            state = m.observe(state, z, a[t - 1 : t] if t else None)
        else:
            state, z, _, _ = m.imagine(state, a[t - 1 : t], temperature)
        zs.append(z)
    x = vae.decode(torch.cat(zs))
    return x.clamp(0, 1).mul(255).byte().permute(0, 2, 3, 1).cpu().numpy()


def save_dream_gif(path: Path, truths: list[np.ndarray], dreams: list[np.ndarray], context: int) -> None:
    """One column per episode; rows truth, imagined, |difference|. A red bar marks dreaming."""
    T = min(len(t) for t in truths)
    frames = []
    for t in range(T):
        cols = []
        for truth, dream in zip(truths, dreams, strict=True):
            imagined = dream[t].copy()
            if t >= context:
                imagined[:2] = (255, 0, 0)
            diff = np.abs(truth[t].astype(np.int16) - dream[t].astype(np.int16)).astype(np.uint8)
            cols.append(np.concatenate([truth[t], imagined, diff], 0))
        frame = np.concatenate(cols, 1)
        frames.append(frame.repeat(2, 0).repeat(2, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    imageio.mimsave(path, frames, duration=0.1, loop=0)


MODE_TAU = 1e-10  # a temperature this low makes every M predict its most likely next latent


@torch.no_grad()
def latent_errors(m: WorldModel, z: torch.Tensor, a: torch.Tensor, horizon: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Open-loop prediction error of M against copying the last real latent.

    z: (B, T+1, Z) real latents, a: (B, T, A) actions, T >= horizon. From every step t with
    t + horizon <= T, M filters z_0..z_t, then imagines `horizon` steps under the real
    actions. Returns the mean squared error per latent dimension at each step ahead, (horizon,),
    for M's most likely prediction and for the prediction z_{t+k} = z_t."""
    B, T = a.shape[:2]
    starts = T - horizon + 1
    state, states = m.initial_state(B), []
    for t in range(starts):
        state = m.observe(state, z[:, t], a[:, t - 1] if t else None)
        states.append(state)
    state = {k: torch.cat([s[k] for s in states]) for k in state}  # row t * B + b
    idx = torch.arange(starts)
    rows = lambda x, k: x[:, idx + k].transpose(0, 1).flatten(0, 1)  # noqa: E731  (start, batch) order
    last = rows(z, 0)
    m_err, copy_err = [], []
    for k in range(horizon):
        state, z_hat, _, _ = m.imagine(state, rows(a, k), MODE_TAU)
        truth = rows(z, k + 1)
        m_err.append((z_hat - truth).pow(2).mean())
        copy_err.append((last - truth).pow(2).mean())
    return torch.stack(m_err), torch.stack(copy_err)


@torch.no_grad()
def mean_latent_errors(
    m: WorldModel, vae: VAE, lat: Latents, episodes: list[int], horizon: int, max_steps: int,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """latent_errors averaged over `episodes` of the latent cache (their first max_steps + 1
    steps, V's mean z), on M's device; None when none is longer than the horizon."""
    device = next(m.parameters()).device
    err, copy, n = torch.zeros(horizon, device=device), torch.zeros(horizon, device=device), 0
    cuda = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):  # M samples even at MODE_TAU: same inputs, same figure
        torch.manual_seed(0)  # seeds the CUDA generator too
        for e in episodes:
            span = lat.episode(e)
            stop = min(span.stop, span.start + max_steps + 1)
            if stop - span.start > horizon + 1:
                z = vae.sample(torch.as_tensor(np.array(lat.stats[span.start:stop]), device=device), mean=True)[None]
                a = torch.as_tensor(np.array(lat.actions[span.start:stop - 1]), device=device)[None]
                e_m, e_copy = latent_errors(m, z, a, horizon)
                err, copy, n = err + e_m, copy + e_copy, n + 1
    return (err / n, copy / n) if n else None
