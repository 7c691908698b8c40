"""Showing what the agent sees: MP4 videos and a live window (--display)."""

from __future__ import annotations

import os
from pathlib import Path

import imageio.v2 as imageio
import numpy as np

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
