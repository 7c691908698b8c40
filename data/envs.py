"""Environment registry: every env becomes uint8 64x64 RGB frames with bounded actions.

Stages never call `gymnasium.make` directly; they call `make_env`, so the frame a policy
sees while generating data is exactly the frame V is trained on and C acts on later.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
from PIL import Image

from data import gridworld  # noqa: F401  (registers GridWorld-v0 with gymnasium)
from utils.cli import UserError

FRAME_SIZE = 64
CARRACING_ZOOM_FRAMES = 50  # CarRacing zooms in for its first second (t < 1 s at 50 FPS)
CARRACING_KEEP_ROWS = 84  # rows 84:96 are the dashboard
DM_CONTROL = "dm_control/"  # shimmy's prefix for the DeepMind Control suite
TAKECOVER_TIME_LIMIT = 2100  # Ha & Schmidhuber cap an episode at 2100 steps (60 s)


class EnvError(UserError):
    """A user-facing problem with the requested environment (one line, no traceback)."""


def resize_frame(frame: np.ndarray, size: int = FRAME_SIZE) -> np.ndarray:
    """Area-averaged resize to size x size uint8 RGB (PIL filters antialias when shrinking)."""
    if frame.shape[0] == size and frame.shape[1] == size:
        return np.ascontiguousarray(frame, dtype=np.uint8)
    img = Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8))
    return np.asarray(img.resize((size, size), Image.Resampling.BILINEAR))


class PixelEnv(gym.Wrapper):
    """Gives uint8 (64, 64, 3) observations and keeps actions inside the action space.

    frame_of: how to read an RGB frame from an observation (None: call render()).
    crop_rows: keep only rows [0, crop_rows) of the raw frame before resizing.
    skip_frames: no-op steps taken inside reset(); their reward is reported in
        info["reset_return"] so episode returns stay comparable with the raw env.
    action_repeat (set by make_env): env steps per agent step, rewards summed, only the
        last frame kept (PlaNet repeats 2 to 8 times on DeepMind Control); the episode ends
        mid-repeat if the env ends it.
    """

    def __init__(
        self,
        env: gym.Env,
        frame_of: Callable[[Any], np.ndarray] | None = None,
        crop_rows: int | None = None,
        skip_frames: int = 0,
        noop_action: Any = None,
    ) -> None:
        super().__init__(env)
        self.action_repeat = 1  # make_env sets it
        self.frame_of = frame_of
        self.crop_rows = crop_rows
        self.skip_frames = skip_frames
        self.noop_action = noop_action
        self.observation_space = gym.spaces.Box(0, 255, (FRAME_SIZE, FRAME_SIZE, 3), np.uint8)

    def _frame(self, obs: Any) -> np.ndarray:
        raw = self.env.render() if self.frame_of is None else self.frame_of(obs)
        if raw is None:
            raise EnvError(f"{self.env.spec.id if self.env.spec else self.env} returned no frame")
        if self.crop_rows is not None:
            raw = raw[: self.crop_rows]
        return resize_frame(raw)

    def bound_action(self, action: Any) -> Any:
        """Clip continuous actions to the box; reject discrete actions outside the range."""
        space = self.env.action_space
        if isinstance(space, gym.spaces.Box):
            a = np.asarray(action, dtype=space.dtype).reshape(space.shape)
            return np.clip(a, space.low, space.high)
        if isinstance(space, gym.spaces.Discrete):
            a = int(np.asarray(action).reshape(()))
            if not space.start <= a < space.start + space.n:
                raise ValueError(f"discrete action {a} outside {space}")
            return a
        return action

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict]:
        obs, info = self.env.reset(**kwargs)
        skipped = 0.0
        for _ in range(self.skip_frames):
            obs, r, terminated, truncated, info = self.env.step(self.noop_action)
            skipped += float(r)
            if terminated or truncated:  # cannot happen for the envs that skip; be safe
                obs, info = self.env.reset()
                skipped = 0.0
        info = dict(info)
        info["reset_return"] = skipped
        return self._frame(obs), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        action, total = self.bound_action(action), 0.0
        for _ in range(self.action_repeat):
            obs, r, terminated, truncated, info = self.env.step(action)
            total += float(r)
            if terminated or truncated:
                break
        return self._frame(obs), total, bool(terminated), bool(truncated), info


def _carracing(**kwargs: Any) -> gym.Env:
    env = gym.make("CarRacing-v3", **kwargs)
    # The zoom-in frames look unlike the rest of the episode and the car stands still
    # through them, so they are skipped with a no-op rather than fed to V and C.
    return PixelEnv(
        env,
        frame_of=lambda o: o,
        crop_rows=CARRACING_KEEP_ROWS,
        skip_frames=CARRACING_ZOOM_FRAMES,
        noop_action=np.zeros(3, np.float32),
    )


def _takecover(**kwargs: Any) -> gym.Env:
    if importlib.util.find_spec("vizdoom") is None:
        raise EnvError("VizdoomTakeCover-v1 needs the vizdoom package: pip install vizdoom==1.3.2")
    import vizdoom.gymnasium_wrapper  # noqa: F401  (registers the Vizdoom* ids)

    env = gym.make("VizdoomTakeCover-v1", max_episode_steps=TAKECOVER_TIME_LIMIT, **kwargs)
    return PixelEnv(env, frame_of=lambda o: o["screen"])


def _dm_control(env_id: str, **kwargs: Any) -> gym.Env:
    """DeepMind Control from pixels through shimmy's ids (PlaNet's benchmark), rendered at
    64x64 by MuJoCo's EGL backend, which needs no display."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    if importlib.util.find_spec("shimmy") is None or importlib.util.find_spec("dm_control") is None:
        raise EnvError(f"{env_id} needs shimmy and dm-control: pip install -r requirements-dmc.txt")
    import shimmy  # noqa: F401  (registers the dm_control/* ids)

    if env_id not in gym.registry:
        raise EnvError(f"unknown DeepMind Control id '{env_id}': shimmy's ids look like dm_control/cartpole-swingup-v0")
    try:
        env = gym.make(env_id, render_mode="rgb_array",
                       render_kwargs={"width": FRAME_SIZE, "height": FRAME_SIZE, "camera_id": 0}, **kwargs)
    except Exception as e:  # a MuJoCo that dm_control cannot load, no EGL, ...
        raise EnvError(f"cannot make '{env_id}': {e}") from e
    return PixelEnv(env)


def _gridworld(env_id: str) -> Callable[..., gym.Env]:
    return lambda **kwargs: PixelEnv(gym.make(env_id, **kwargs), frame_of=lambda o: o)


KNOWN_ENVS: dict[str, Callable[..., gym.Env]] = {
    "CarRacing-v3": _carracing,
    "VizdoomTakeCover-v1": _takecover,
    "GridWorld-v0": _gridworld("GridWorld-v0"),
    "GridWorldContinuous-v0": _gridworld("GridWorldContinuous-v0"),
    "GridWorld8x8-v0": _gridworld("GridWorld8x8-v0"),
    "GridWorldFixed-v0": _gridworld("GridWorldFixed-v0"),
    "GridWorldFixedContinuous-v0": _gridworld("GridWorldFixedContinuous-v0"),
}


def _is_image_space(space: gym.Space) -> bool:
    return (
        isinstance(space, gym.spaces.Box)
        and space.dtype == np.uint8
        and len(space.shape) == 3
        and space.shape[-1] == 3
    )


def _generic(env_id: str, **kwargs: Any) -> gym.Env:
    """Any registered gymnasium id: its own image observations, else render('rgb_array').

    'module:Env-v0' imports `module` first, so user packages can register their own envs.
    """
    module, _, name = env_id.rpartition(":")
    if module:
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise EnvError(f"cannot import '{module}' for env '{env_id}': {e}") from e
        env_id = name
    if env_id not in gym.registry:
        known = ", ".join(KNOWN_ENVS)
        raise EnvError(f"unknown env '{env_id}': known ids are {known}, or any gymnasium id")
    try:
        env = gym.make(env_id, render_mode="rgb_array", **kwargs)
    except Exception as e:  # missing extras, unsupported render_mode, ...
        raise EnvError(f"cannot make '{env_id}' with pixel rendering: {e}") from e
    modes = env.metadata.get("render_modes", [])
    if _is_image_space(env.observation_space):
        return PixelEnv(env, frame_of=lambda o: o)
    if "rgb_array" not in modes:
        env.close()
        raise EnvError(f"'{env_id}' cannot render pixels (render_modes: {modes})")
    return PixelEnv(env)


def make_env(env_id: str, action_repeat: int = 1, **kwargs: Any) -> PixelEnv:
    """Build `env_id` wrapped to 64x64 uint8 frames, each agent step repeating its action
    `action_repeat` times; raises EnvError with a one-line reason."""
    if action_repeat < 1:
        raise EnvError(f"action repeat must be >= 1, not {action_repeat}")
    factory = KNOWN_ENVS.get(env_id)
    if env_id.startswith(DM_CONTROL):
        env = _dm_control(env_id, **kwargs)
    else:
        env = factory(**kwargs) if factory else _generic(env_id, **kwargs)
    env.action_repeat = action_repeat
    return env


def describe_space(space: gym.Space) -> dict:
    """JSON-friendly description of an action space, stored in dataset.json."""
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "discrete", "n": int(space.n)}
    if isinstance(space, gym.spaces.Box):
        return {
            "type": "box",
            "shape": list(space.shape),
            "low": space.low.tolist(),
            "high": space.high.tolist(),
        }
    raise EnvError(f"unsupported action space {space}: only Discrete and Box are handled")


def time_limit(env: gym.Env, default: int = 1000) -> int:
    """The env's episode cap in agent steps: its TimeLimit, else an own `max_steps`
    (GridWorld), else default, divided by the action repeat."""
    spec_limit = env.spec.max_episode_steps if env.spec is not None else None
    limit = int(spec_limit or getattr(env.unwrapped, "max_steps", None) or default)
    return -(-limit // getattr(env, "action_repeat", 1))
