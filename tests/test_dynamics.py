"""Stage 3 end to end: latent cache, resume, upstream checks and dreams of traindynamics.py."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import imageio.v2 as imageio
import pytest
import torch

from data.dataset import open_dataset
from data.latents import latent_cache
from tests.conftest import run_script
from utils.checkpoint import CheckpointError, load_checkpoint
from utils.dreams import MODE_TAU, latent_errors
from utils.upstream import load_dynamics, load_vae

TINY_V = ["--width", "4", "--latent-size", "4", "--batch-size", "16", "--nosamples", "--epochs", "1"]
TINY_M = ["--hidden-size", "16", "--gaussians", "2", "--seq-len", "8", "--batch-size", "8", "--nodreams"]


def trainvae(logdir: Path, dataset: Path, *args: str) -> None:
    run_script("trainvae.py", "--logdir", str(logdir), "--dataset", str(dataset), "--device", "cpu", *TINY_V, *args)


def traindynamics(logdir: Path, dataset: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run_script("traindynamics.py", "--logdir", str(logdir), "--dataset", str(dataset), "--device", "cpu",
                      *TINY_M, *args, check=check)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    run_script("generation_script.py", "--rootdir", str(root), "--rollouts", "12", "--threads", "0")
    return root


@pytest.fixture(scope="module")
def with_vae(data, tmp_path_factory) -> Path:
    logdir = tmp_path_factory.mktemp("exp")
    trainvae(logdir, data)
    return logdir


@pytest.fixture
def logdir(with_vae, tmp_path) -> Path:
    """A private copy of a logdir holding a trained V."""
    shutil.copytree(with_vae, tmp_path / "exp")
    return tmp_path / "exp"


def test_latents_are_cached_then_rebuilt_when_v_changes(logdir, data) -> None:
    traindynamics(logdir, data, "--epochs", "1")
    meta = logdir / "latents" / "meta.json"
    stamp, key = meta.stat().st_mtime_ns, json.loads(meta.read_text())["vae"]
    assert key == load_checkpoint(logdir / "vae" / "best.pt")["id"]
    out = traindynamics(logdir, data, "--epochs", "2").stdout
    assert meta.stat().st_mtime_ns == stamp and "encoding again" not in out  # reused

    trainvae(logdir, data, "--noreload", "--seed", "1")  # a new V
    proc = traindynamics(logdir, data, "--epochs", "3", check=False)
    assert proc.returncode == 2 and "trained with other vae" in proc.stderr  # old M does not fit it
    out = traindynamics(logdir, data, "--epochs", "1", "--noreload").stdout
    assert "encoding again" in out
    assert json.loads(meta.read_text())["vae"] == load_checkpoint(logdir / "vae" / "best.pt")["id"]


def test_resume_equals_uninterrupted(logdir, data, tmp_path) -> None:
    other = tmp_path / "other"
    shutil.copytree(logdir, other)
    traindynamics(logdir, data, "--epochs", "3")
    traindynamics(other, data, "--epochs", "2")
    assert "resuming" in traindynamics(other, data, "--epochs", "3").stdout
    a = load_checkpoint(logdir / "dynamics" / "mdrnn" / "latest.pt")["model"]
    b = load_checkpoint(other / "dynamics" / "mdrnn" / "latest.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_noreload_starts_afresh(logdir, data) -> None:
    traindynamics(logdir, data, "--epochs", "2")
    assert "resuming" not in traindynamics(logdir, data, "--epochs", "1", "--noreload").stdout
    assert load_checkpoint(logdir / "dynamics" / "mdrnn" / "latest.pt")["progress"]["epoch"] == 1


def test_an_m_saved_before_an_option_existed_resumes_and_a_changed_option_is_refused(logdir, data) -> None:
    """--dropout came after some logdirs were trained: their checkpoints lack the field and
    must resume with it off; turning it on asks for a fresh M."""
    traindynamics(logdir, data, "--epochs", "1")
    path = logdir / "dynamics" / "mdrnn" / "latest.pt"
    ckpt = load_checkpoint(path)
    del ckpt["identity"]["model"]["dropout"]
    torch.save(ckpt, path)
    assert "resuming" in traindynamics(logdir, data, "--epochs", "2").stdout
    proc = traindynamics(logdir, data, "--epochs", "3", "--dropout", "0.05", check=False)
    assert proc.returncode == 2 and "trained with other model" in proc.stderr
    assert "model.dropout: 0.0 there, 0.05 here" in proc.stderr  # names the flag to change back
    traindynamics(logdir, data, "--epochs", "1", "--dropout", "0.05", "--noreload")
    assert load_checkpoint(logdir / "dynamics" / "mdrnn" / "best.pt")["identity"]["model"]["dropout"] == 0.05


def test_latent_size_mismatch_between_v_and_m_is_refused(logdir, data) -> None:
    traindynamics(logdir, data, "--epochs", "1")
    trainvae(logdir, data, "--noreload", "--latent-size", "8")
    vae, vae_id = load_vae(logdir, torch.device("cpu"))
    with pytest.raises(CheckpointError, match="expects z of size 4 but V has 8"):
        load_dynamics(logdir, "mdrnn", vae, vae_id, torch.device("cpu"))


def test_dream_gifs_each_epoch_and_on_demand(logdir, data) -> None:
    with_dreams = [a for a in TINY_M if a != "--nodreams"]
    run_script("traindynamics.py", "--logdir", str(logdir), "--dataset", str(data), "--device", "cpu",
               *with_dreams, "--epochs", "2")
    dreams = logdir / "dynamics" / "mdrnn" / "dreams"
    assert sorted(p.name for p in dreams.iterdir()) == ["epoch_001.gif", "epoch_002.gif"]
    frames = imageio.mimread(dreams / "epoch_002.gif")
    assert len(frames) > 8  # context plus dreamed steps
    h, w = frames[0].shape[:2]
    assert h == 3 * 64 * 2 and w % (64 * 2) == 0  # rows truth / imagined / difference, 2x scale
    out = run_script("traindynamics.py", "--logdir", str(logdir), "--dataset", str(data), "--device", "cpu",
                     "--dream-only", "--temperature", "1.15").stdout
    assert (dreams / "best_tau1.15.gif").exists() and "train loss" not in out  # trained nothing


def test_missing_v_names_the_command(data, tmp_path) -> None:
    proc = traindynamics(tmp_path / "empty", data, "--epochs", "1", check=False)
    assert proc.returncode == 2 and "run `python trainvae.py" in proc.stderr


def held_out_episodes(logdir: Path, data: Path, name: str) -> tuple:
    """M `name` from logdir, and V's mean latents and the actions, rewards and endings of the
    held-out GridWorld episodes."""
    cpu = torch.device("cpu")
    vae, vae_id = load_vae(logdir, cpu)
    m, _ = load_dynamics(logdir, name, vae, vae_id, cpu)
    lat = latent_cache(logdir, data, open_dataset(data), vae, vae_id, cpu)
    val = json.loads((logdir / "split.json").read_text())["val"]
    episodes = []
    for e in [lat.names.index(n) for n in val]:
        span = lat.episode(e)
        episodes.append((vae.sample(torch.tensor(lat.stats[span]), mean=True)[None],
                         *(torch.tensor(x[span])[None] for x in (lat.actions, lat.rewards, lat.terminals))))
    return m, episodes


@pytest.mark.parametrize("name", ["mdrnn", "rssm", "tssm"])
def test_each_m_predicts_gridworld_latents_better_than_copying(grid_world, grid_data, name) -> None:
    """M's most likely z 1 step ahead beats z_{t+k} = z_t by at least 5%, and 2 and 3 steps
    ahead by at least 3% (the agent moves one cell; the rest of the frame stays). Measured
    error ratios at 1/2/3 steps: MDN-RNN 0.91/0.89/0.89, RSSM over 4 seeds
    0.60-0.63/0.56-0.63/0.49-0.59, TSSM over 3 seeds 0.86-0.92/0.89-0.94/0.91-0.94."""
    m, episodes = held_out_episodes(grid_world, grid_data, name)
    m_err, copy_err = torch.zeros(3), torch.zeros(3)
    for z, a, *_ in episodes:
        if a.shape[1] >= 4:
            e, c = latent_errors(m, z, a[:, :-1], 3)
            m_err, copy_err = m_err + e, copy_err + c
    assert (m_err < torch.tensor([0.95, 0.97, 0.97]) * copy_err).all(), (m_err, copy_err)


def filtered_predictions(logdir: Path, data: Path, name: str) -> tuple[torch.Tensor, ...]:
    """For every held-out step, M filtering the real latents predicts p(done) and the reward
    of the real next action. Returns (p_done, done, predicted reward, reward)."""
    m, episodes = held_out_episodes(logdir, data, name)
    p_done, done, r_hat, r = [], [], [], []
    with torch.no_grad():
        for z, a, reward, terminal in episodes:
            state = m.initial_state(1)
            for t in range(a.shape[1]):
                state = m.observe(state, z[:, t], a[:, t - 1] if t else None)
                _, _, r_t, p_t = m.imagine(state, a[:, t], MODE_TAU)
                p_done.append(p_t)
                r_hat.append(r_t)
            done.append(terminal[0])
            r.append(reward[0])
    p_done, done, r_hat, r = (torch.cat(x) for x in (p_done, done, r_hat, r))
    return p_done, done.bool(), r_hat, r


@pytest.mark.parametrize("name", ["mdrnn", "rssm", "tssm"])
def test_done_head_and_step_cost_learn_gridworld(grid_world, grid_data, name) -> None:
    """M tells the steps that end an episode from the others, and predicts the step cost."""
    p_done, done, r_hat, r = filtered_predictions(grid_world, grid_data, name)
    assert done.sum() >= 30  # enough goal and hazard endings to judge
    assert p_done[done].mean() > 3 * p_done[~done].mean()  # measured: MDN-RNN 7.5x, RSSM 19-29x, TSSM 14-16x
    assert (r_hat[~done] - r[~done]).abs().mean() < 0.1  # the step cost elsewhere


@pytest.mark.parametrize("name", ["mdrnn", "rssm", "tssm"])
def test_reward_head_tells_goal_from_hazard(grid_world, grid_data, name) -> None:
    _, done, r_hat, r = filtered_predictions(grid_world, grid_data, name)
    goal, hazard = done & (r > 0), done & (r < 0)
    # measured: MDN-RNN 0.19 (0.31 with --head-units 64, whose harsher dream then left too
    # little room for test_agent's dream-fitness gain), RSSM 0.43-0.59 (4 seeds), TSSM
    # 0.47-0.52 (RESULTS.md)
    assert r_hat[goal].mean() > r_hat[hazard].mean() + 0.15
