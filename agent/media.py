"""Showing what the agent sees: MP4 videos, a live window (--display) and dream GIFs."""

from __future__ import annotations

import os
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import torch
from torch.nn.utils import parameters_to_vector

from agent.evaluate import DreamEvaluator
from models.actor_critic import Actor
from utils.cli import UserError

SCALE = 4  # 64x64 frames shown at 256x256


def upscale(frame: np.ndarray, scale: int = SCALE) -> np.ndarray:
    return frame.repeat(scale, 0).repeat(scale, 1)


def write_video(path: Path, frames: list[np.ndarray], fps: int) -> None:
    """H.264 MP4 through imageio-ffmpeg's bundled ffmpeg."""
    path.parent.mkdir(parents=True, exist_ok=True)
    imageio.mimwrite(path, [upscale(f) for f in frames], fps=fps, codec="libx264", macro_block_size=16)


class Window:
    """A pygame window showing frames as they come; needs a display (or xvfb-run)."""

    def __init__(self, title: str, fps: int) -> None:
        if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
            raise UserError('--display needs a display; on a headless server run under '
                            'xvfb-run -s "-screen 0 1400x900x24" python test_controller.py ...')
        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
        import pygame

        pygame.display.init()
        self.pygame = pygame
        self.screen = pygame.display.set_mode((64 * SCALE, 64 * SCALE))
        pygame.display.set_caption(title)
        self.clock = pygame.time.Clock()
        self.fps = fps

    def show(self, frame: np.ndarray) -> None:
        pg = self.pygame
        for event in pg.event.get():
            if event.type == pg.QUIT:
                raise KeyboardInterrupt
        surface = pg.surfarray.make_surface(upscale(frame).swapaxes(0, 1))
        self.screen.blit(surface, (0, 0))
        pg.display.flip()
        self.clock.tick(self.fps)

    def close(self) -> None:
        self.pygame.display.quit()


@torch.no_grad()
def save_policy_dreams(path: Path, dreams: DreamEvaluator, actor: Actor, n: int, max_steps: int) -> None:
    """A GIF of the actor (its most likely actions) in n dreams from held-out starts, decoded
    by V side by side; a dream that ended keeps its last frame, with a red bar."""
    agent = dreams.agent
    params = parameters_to_vector(actor.parameters()).detach().expand(n, -1)
    seeds = torch.arange(n)
    _, steps, zs = agent.dream(params, dreams.starts_for(seeds), seeds, dreams.temperature, max_steps,
                               dreams.survival, record=True)
    z = torch.stack(zs, 1)  # (n, T + 1, Z)
    x = agent.vae.decode(z.flatten(0, 1)).unflatten(0, z.shape[:2])
    frames = x.clamp(0, 1).mul(255).byte().permute(0, 1, 3, 4, 2).cpu().numpy()  # (n, T + 1, 64, 64, 3)
    out = []
    for t in range(int(steps.max()) + 1):
        cols = []
        for i in range(n):
            f = frames[i, min(t, int(steps[i]))].copy()
            if t > steps[i]:
                f[:2] = (255, 0, 0)
            cols.append(f)
        out.append(upscale(np.concatenate(cols, 1), 2))
    path.parent.mkdir(parents=True, exist_ok=True)
    imageio.mimsave(path, out, duration=0.1, loop=0)
