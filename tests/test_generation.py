"""Stage 1 end to end: datasets of every env, reproducibility, top-up after a kill, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from data.dataset import list_rollouts
from data.rollouts import load_rollout
from tests.conftest import ROOT, run_script


def generate(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run_script("generation_script.py", "--rootdir", str(root), *args, check=check)


def load_all(root: Path) -> dict[str, dict[str, np.ndarray]]:
    return {p.name: load_rollout(p) for p in list_rollouts(root)}


def assert_same_datasets(a: Path, b: Path) -> None:
    da, db = load_all(a), load_all(b)
    assert sorted(da) == sorted(db)
    for name in da:
        for k in da[name]:
            np.testing.assert_array_equal(da[name][k], db[name][k], err_msg=f"{name}:{k}")


@pytest.mark.parametrize(
    "env, args, action_shape",
    [
        ("GridWorld-v0", ["--rollouts", "6"], ()),
        ("GridWorldContinuous-v0", ["--rollouts", "3"], (2,)),
        ("CarRacing-v3", ["--rollouts", "1", "--max-steps", "25"], (3,)),
        ("VizdoomTakeCover-v1", ["--rollouts", "2", "--max-steps", "40"], ()),
        # PlaNet's benchmark from pixels, each action held for 4 physics steps
        ("dm_control/cartpole-swingup-v0", ["--rollouts", "2", "--action-repeat", "4", "--max-steps", "10"], (1,)),
    ],
)
def test_small_dataset_of_each_env(tmp_path, env, args, action_shape) -> None:
    out = generate(tmp_path, "--env", env, "--threads", "2", *args).stdout
    n = int(args[1])
    files = list_rollouts(tmp_path)
    assert [p.name for p in files] == [f"rollout_{i:06d}.npz" for i in range(n)]
    meta = json.loads((tmp_path / "dataset.json").read_text())
    assert meta["env"] == env and meta["episodes_count"] == n
    assert meta.get("action_repeat", 1) == (4 if "--action-repeat" in args else 1)
    total = 0
    for p in files:
        r = load_rollout(p)
        T = len(r["rewards"])
        total += T
        assert r["observations"].shape == (T, 64, 64, 3) and r["observations"].std() > 0  # real pictures
        assert r["actions"].shape == (T, *action_shape)
        assert r["terminals"][-1] or r["truncations"][-1]  # every episode is closed
        assert not (r["terminals"][:-1] | r["truncations"][:-1]).any()
        assert meta["episodes"][p.name]["frames"] == T
    assert meta["frames"] == total
    assert f"{n} episodes, {total} frames" in out and "frames/s" in out
    if "--max-steps" in args:
        assert all(len(load_rollout(p)["rewards"]) <= int(args[-1]) for p in files)


def test_same_seed_same_data_whatever_the_worker_count(tmp_path) -> None:
    generate(tmp_path / "a", "--rollouts", "8", "--threads", "0", "--seed", "3")
    generate(tmp_path / "b", "--rollouts", "8", "--threads", "2", "--seed", "3")
    assert_same_datasets(tmp_path / "a", tmp_path / "b")
    generate(tmp_path / "c", "--rollouts", "8", "--threads", "0", "--seed", "4")
    assert not np.array_equal(
        load_rollout(tmp_path / "a" / "rollout_000000.npz")["observations"],
        load_rollout(tmp_path / "c" / "rollout_000000.npz")["observations"],
    )


def test_killed_run_tops_up_without_duplicates_or_half_files(tmp_path) -> None:
    n = 300
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    cmd = [sys.executable, "generation_script.py", "--rootdir", str(killed), "--rollouts", str(n), "--threads", "2"]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 60
    while len(list(killed.glob("rollout_*.npz"))) < 20 and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # parent and workers, as a kill -9 or power cut would
    proc.wait()
    survivors = list_rollouts(killed)
    assert 20 <= len(survivors) < n
    for p in survivors:  # every file under a final name is whole
        load_rollout(p)

    out = generate(killed, "--rollouts", str(n), "--threads", "2").stdout
    assert f"generating {n - len(survivors)}" in out
    assert not [p for p in killed.iterdir() if p.name.startswith(".")]  # no temp files left
    generate(clean, "--rollouts", str(n), "--threads", "0")
    assert_same_datasets(killed, clean)
    meta = json.loads((killed / "dataset.json").read_text())
    assert meta["episodes_count"] == n and len(meta["episodes"]) == n


def test_rerun_with_other_settings_is_refused(tmp_path) -> None:
    generate(tmp_path, "--rollouts", "2", "--seed", "1")
    proc = generate(tmp_path, "--rollouts", "4", "--seed", "2", check=False)
    assert proc.returncode == 2
    assert "seed: 1 there, 2 asked" in proc.stderr
    assert len(list_rollouts(tmp_path)) == 2


def test_crashing_env_reports_worker_traceback_and_leaves_nothing(tmp_path) -> None:
    env = "tests.envs_for_tests:Crashing-v0"
    proc = generate(tmp_path, "--env", env, "--rollouts", "3", "--threads", "2", check=False)
    assert proc.returncode != 0
    assert "RuntimeError: simulated bug inside the environment" in proc.stderr
    assert "Traceback" in proc.stderr  # the worker's own traceback reaches the user
    assert list_rollouts(tmp_path) == []
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_dying_worker_is_reported(tmp_path) -> None:
    env = "tests.envs_for_tests:Dying-v0"
    proc = generate(tmp_path, "--env", env, "--rollouts", "1", "--threads", "1", check=False)
    assert proc.returncode != 0
    assert "died with exit code 13" in proc.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--env", "NoSuchEnv-v0"], "error: unknown env 'NoSuchEnv-v0': known ids are"),
        (["--env", "CarRacing-v3", "--policy", "sticky"], "policy 'sticky' does not fit"),
        (["--rollouts", "0"], "--rollouts and --max-steps must be >= 1"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, args, message) -> None:
    proc = generate(tmp_path / "d", *args, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "d").exists() or list_rollouts(tmp_path / "d") == []
