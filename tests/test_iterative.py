"""Iterative training (Ha & Schmidhuber, section 5): the trained C collects the next dataset."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch

from agent.evaluate import load_trained
from data.dataset import episode_split, list_rollouts
from data.rollouts import load_rollout, save_rollout
from models.noise import SeededNoise
from models.vae import frames_to_tensor
from tests.conftest import run_script

C_ARGS = ["--dream", "--generations", "2", "--pop-size", "16", "--n-samples", "8", "--eval-every", "2",
          "--eval-episodes", "32", "--device", "cpu"]


def c_actions(logdir: Path, frames: np.ndarray) -> list[int]:
    """What C chooses on these frames, replayed through V and M one step at a time."""
    agent, params, _ = load_trained(logdir, "mdrnn", "cmaes", torch.device("cpu"))
    state, a_prev, out = agent.m.initial_state(1), None, []
    with torch.no_grad():
        for obs in frames:
            z = agent.vae.sample(agent.vae.encode(frames_to_tensor(torch.from_numpy(obs[None]))),
                                 mean=True)
            state = agent.m.observe(state, z, a_prev)
            a = agent.c.act(agent.m.features(state), params, SeededNoise(torch.tensor([0])))
            a_prev = agent.c.m_input(a)
            out.append(int(a[0]))
    return out


def test_controller_rollouts_are_valid_and_follow_c(grid_world, tmp_path) -> None:
    logdir = Path(shutil.copytree(grid_world, tmp_path / "exp"))
    run_script("trainagent.py", "--logdir", str(logdir), *C_ARGS)
    root = tmp_path / "iter1"
    common = ["--policy", "controller", "--logdir", str(logdir), "--rollouts", "4", "--threads", "2",
              "--rootdir", str(root)]
    run_script("generation_script.py", *common, "--noise", "0")
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["policy"] == "ControllerPolicy" and meta["env"] == "GridWorld-v0" and meta["episodes_count"] == 4
    files = list_rollouts(root)
    assert len(files) == 4
    for f in files:  # without noise every recorded action is C's own choice
        r = load_rollout(f)
        assert r["actions"].tolist() == c_actions(logdir, r["observations"])
    # with noise, the same episode seeds give other actions somewhere
    run_script("generation_script.py", *common[:-1], str(tmp_path / "noisy"), "--noise", "0.5")
    noisy = [load_rollout(f)["actions"] for f in list_rollouts(tmp_path / "noisy")]
    clean = [load_rollout(f)["actions"] for f in files]
    assert any(len(a) != len(b) or (a != b).any() for a, b in zip(noisy, clean, strict=True))


def test_a_top_up_with_another_controller_is_refused(grid_world, tmp_path) -> None:
    logdir = Path(shutil.copytree(grid_world, tmp_path / "exp"))
    run_script("trainagent.py", "--logdir", str(logdir), *C_ARGS)
    args = ["--policy", "controller", "--logdir", str(logdir), "--rollouts", "1", "--threads", "0",
            "--rootdir", str(tmp_path / "iter")]
    run_script("generation_script.py", *args)
    run_script("trainagent.py", "--logdir", str(logdir), *C_ARGS, "--noreload")  # a new C: a new checkpoint id
    proc = run_script("generation_script.py", *args, check=False)
    assert proc.returncode == 2 and "other settings" in proc.stderr and "controller" in proc.stderr


def test_controller_episodes_in_a_subfolder_join_the_split_under_their_own_names(tmp_path) -> None:
    """The dataset M retrains on holds rollout_000000.npz twice: at its top and in controller_x/."""
    r = {"observations": np.zeros((3, 64, 64, 3), np.uint8), "actions": np.zeros(3, np.int64),
         "rewards": np.zeros(3, np.float32), "terminals": np.array([0, 0, 1], bool)}
    for sub in ("", "controller_x"):
        for i in range(20):
            (tmp_path / "data" / sub).mkdir(parents=True, exist_ok=True)
            save_rollout(tmp_path / "data" / sub / f"rollout_{i:06d}.npz", r)
    files = list_rollouts(tmp_path / "data")
    (tmp_path / "exp").mkdir()
    first = [f for f in files if f.parent.name == "data"]  # the random episodes come first
    _, val = episode_split(tmp_path / "exp", first, 0.1)
    train2, val2 = episode_split(tmp_path / "exp", files, 0.1)  # then the controller's join
    names = json.loads((tmp_path / "exp" / "split.json").read_text())
    assert len(files) == 40 and sorted(train2 + val2) == list(range(40))
    assert {first[i] for i in val} <= {files[i] for i in val2}  # earlier assignments are kept
    assert "controller_x/rollout_000000.npz" in names["train"] + names["val"]
    assert "rollout_000000.npz" in names["train"] + names["val"]
