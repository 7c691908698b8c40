"""Stages 4 and 5 end to end on GridWorld: CMA-ES learns in the dream and in the real env,
resumes exactly, survives or reports broken workers, and test_controller reports and films."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
import torch

from agent.cmaes import SearchSettings, selection_seeds
from agent.episodes import Agent
from agent.evaluate import AgentSpec, DreamEvaluator, RealEvaluator, dream_evaluator, load_world
from data.dataset import open_dataset
from data.envs import make_env
from data.latents import cached_dataset, latent_cache
from models.controller import ControllerConfig, LinearController
from models.noise import SeededNoise
from tests.conftest import ROOT, run_script
from utils.checkpoint import load_checkpoint, save_checkpoint

SMALL = ["--pop-size", "16", "--n-samples", "8", "--eval-every", "2", "--eval-episodes", "32", "--device", "cpu"]


@pytest.fixture
def logdir(grid_world, tmp_path) -> Path:
    """A private copy of the GridWorld logdir with V and M."""
    return Path(shutil.copytree(grid_world, tmp_path / "exp"))


def trainagent(logdir: Path, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    return run_script("trainagent.py", "--logdir", str(logdir), *SMALL, *args, check=check, timeout=timeout)


def metrics(logdir: Path) -> list[dict]:
    lines = (logdir / "agent" / "mdrnn" / "cmaes" / "metrics.jsonl").read_text().splitlines()
    return [json.loads(ln) for ln in lines]


@pytest.mark.parametrize("dynamics", ["mdrnn", "rssm", "tssm"])
def test_cmaes_in_the_dream_improves_dream_fitness(logdir, dynamics) -> None:
    """The evolved C beats the search's starting point (all-zero parameters) in held-out dreams
    of each M, by at least five standard errors of the paired difference.

    A fixed margin does not fit all three Ms: this search gains 0.14-0.17 in the TSSM's dream
    (5 seeds) but 0.31 in the MDN-RNN's (1 seed), and a 0.15 margin failed CI for the TSSM."""
    # dreams are cheap: 256 selection dreams, because best-of-20 selections over 32 noisy
    # dreams kept a lucky early TSSM candidate that scored no better than the start
    trainagent(logdir, "--dream", "--generations", "40", "--pop-size", "64", "--n-samples", "16",
               "--eval-episodes", "256", "--dynamics", dynamics)
    cpu = torch.device("cpu")
    vae, m, ids = load_world(logdir, dynamics, cpu)
    best = load_checkpoint(logdir / "agent" / dynamics / "cmaes" / "best.pt")
    agent = Agent(vae, m, LinearController(ControllerConfig(**best["controller"])), cpu)
    dataset = cached_dataset(logdir)
    lat = latent_cache(logdir, dataset, open_dataset(dataset), vae, ids["vae"], cpu)
    dreams = DreamEvaluator(agent, lat, list(range(len(lat.names))), 1.0, 16, survival=False)
    seeds = list(range(2**30, 2**30 + 1000))
    trained = dreams(np.repeat(best["params"].numpy()[None], 1000, 0), seeds)[0]
    start = dreams(np.zeros((1000, len(best["params"]))), seeds)[0]
    gain = trained - start  # same seeds, so the difference is paired
    se = gain.std(ddof=1) / np.sqrt(len(gain))
    assert gain.mean() > 5 * se, (start.mean(), trained.mean(), se)


def test_cmaes_in_the_real_env_keeps_the_best_selected_candidate(logdir) -> None:
    trainagent(logdir, "--generations", "4", "--max-workers", "2", "--discrete", "sample")
    m = metrics(logdir)
    assert [x["step"] for x in m] == [1, 2, 3, 4]
    assert all(x["frames"] > y["frames"] for x, y in zip(m[1:], m, strict=False))  # real steps counted
    best = load_checkpoint(logdir / "agent" / "mdrnn" / "cmaes" / "best.pt")
    assert best["score"] == max(x["select_mean"] for x in m if "select_mean" in x)
    assert 0 <= m[-1]["select_success"] <= 1


def test_a_dream_search_can_choose_its_best_on_real_episodes(logdir) -> None:
    """--dream --select real: fitness in M's dream, best.pt judged on real selection episodes,
    whose score a replay of best.pt in the real env on the same seeds gives back."""
    trainagent(logdir, "--dream", "--select", "real", "--generations", "4", "--max-workers", "2")
    m = metrics(logdir)
    assert [x["select_frames"] for x in m] == [0, m[1]["select_frames"], m[1]["select_frames"], m[3]["select_frames"]]
    assert 0 < m[1]["select_frames"] < m[3]["select_frames"]  # 32 real episodes at generations 2 and 4
    best = load_checkpoint(logdir / "agent" / "mdrnn" / "cmaes" / "best.pt")
    assert best["score"] == max(x["select_mean"] for x in m if "select_mean" in x)
    spec = AgentSpec(str(logdir), "mdrnn", "GridWorld-v0", best["controller"], "cpu")
    evaluator = RealEvaluator(spec, 0, 60.0, None, 16)
    try:
        seeds = selection_seeds(SearchSettings(eval_episodes=32))
        replay = evaluator(np.repeat(best["params"].numpy()[None], 32, 0), seeds)[0]
    finally:
        evaluator.close()
    assert replay.mean() == pytest.approx(best["score"])
    ledger = logdir / "ledger.json"
    run_script("test_controller.py", "--logdir", str(logdir), "--episodes", "4", "--workers", "0", "--results",
               str(ledger))
    assert json.loads(ledger.read_text())["dream_only"] is False  # real episodes chose it
    proc = trainagent(logdir, "--select", "dream", "--generations", "1", check=False)
    assert proc.returncode == 2 and "--select dream needs --dream" in proc.stderr


def test_resumed_search_continues_exactly(logdir, tmp_path) -> None:
    other = Path(shutil.copytree(logdir, tmp_path / "other"))
    trainagent(logdir, "--dream", "--generations", "4")
    trainagent(other, "--dream", "--generations", "2")
    proc = trainagent(other, "--dream", "--generations", "4")
    assert "resuming" in proc.stdout
    strip = lambda ms: [{k: v for k, v in x.items() if k != "seconds"} for x in ms]  # noqa: E731
    resumed, whole = strip(metrics(other)), strip(metrics(logdir))
    assert [x.keys() for x in resumed] == [x.keys() for x in whole]  # nothing lost, nothing logged twice
    # the same up to float32 rounding: torch's multithreaded CPU kernels are not bit-stable
    # across processes (CI once saw a first generation's fitness differ in the 7th digit)
    assert all(r == pytest.approx(w, rel=1e-5) for r, w in zip(resumed, whole, strict=True)), (resumed, whole)
    a, b = (load_checkpoint(d / "agent" / "mdrnn" / "cmaes" / "best.pt") for d in (logdir, other))
    assert torch.allclose(a["params"], b["params"], rtol=1e-5, atol=1e-6)


def test_changed_search_settings_are_refused_on_resume(logdir) -> None:
    trainagent(logdir, "--dream", "--generations", "1")
    proc = trainagent(logdir, "--dream", "--generations", "2", "--sigma", "0.5", check=False)
    assert proc.returncode == 2 and "--noreload" in proc.stderr
    proc = trainagent(logdir, "--dream", "--generations", "2", "--select", "real", check=False)
    assert proc.returncode == 2 and "other select" in proc.stderr
    latest = logdir / "agent" / "mdrnn" / "cmaes" / "latest.pt"
    ckpt = load_checkpoint(latest)
    del ckpt["identity"]["select"]  # as saved before --select existed
    save_checkpoint(latest, ckpt)
    assert "resuming" in trainagent(logdir, "--dream", "--generations", "2").stdout


@pytest.mark.parametrize("dynamics", ["mdrnn", "rssm", "tssm"])
def test_batched_dreams_equal_dreams_one_by_one(grid_world, dynamics) -> None:
    cpu = torch.device("cpu")
    vae, m, _ = load_world(grid_world, dynamics, cpu)
    c = LinearController(ControllerConfig(m.feature_size, 4, True))
    agent = Agent(vae, m, c, cpu)
    params = torch.randn(6, c.cfg.n_params)
    starts = vae.encode(torch.rand(6, 3, 64, 64))
    seeds = torch.tensor([5, 6, 7, 8, 9, 10])
    ret, steps, _ = agent.dream(params, starts, seeds, 1.0, 16, survival=False)
    for i in range(6):
        r1, s1, _ = agent.dream(params[i : i + 1], starts[i : i + 1], seeds[i : i + 1], 1.0, 16, survival=False)
        assert torch.allclose(r1, ret[i : i + 1], atol=1e-5) and torch.equal(s1, steps[i : i + 1])
    assert len(set(steps.tolist())) > 1 or len(set(ret.tolist())) > 1  # the rows really differ


def test_read_only_frames_act_as_writable_ones_and_are_never_wrapped(grid_world, monkeypatch) -> None:
    """Some envs hand out read-only frames, which torch warns about (once per process) when it
    wraps them: V must copy those first and act on them as on writable ones."""
    cpu = torch.device("cpu")
    vae, m, _ = load_world(grid_world, "mdrnn", cpu)
    c = LinearController(ControllerConfig(m.feature_size, 4, True))
    agent = Agent(vae, m, c, cpu)
    params = torch.randn(2, c.cfg.n_params)
    frames = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    locked = frames.copy()
    locked.flags.writeable = False
    noise = SeededNoise(torch.tensor([1, 2]))
    _, a = agent.step(m.initial_state(2), None, frames, params, noise)
    wrap = torch.from_numpy

    def strict_wrap(array: np.ndarray) -> torch.Tensor:
        assert array.flags.writeable, "torch was asked to wrap a read-only array"
        return wrap(array)

    monkeypatch.setattr(torch, "from_numpy", strict_wrap)
    _, a_locked = agent.step(m.initial_state(2), None, locked, params, noise)
    assert torch.equal(a, a_locked) and not locked.flags.writeable


class RandomEnds:
    """A stand-in M whose dreams end at seed-driven random times (about 1 in 6 steps), so a
    batch of them keeps shrinking: z_{t+1} = z_t + a_t + noise, reward = sum(z)."""

    z_size, action_size, feature_size = 3, 4, 3

    def initial_state(self, batch: int) -> dict:
        return {"z": torch.zeros(batch, 3)}

    def observe(self, state: dict, z: torch.Tensor, a_prev: torch.Tensor | None) -> dict:
        return {"z": z}

    def imagine(self, state: dict, a: torch.Tensor, temperature: float = 1.0, noise=None) -> tuple:
        z = state["z"] + a[:, :3] + temperature * noise.normal((len(a), 3), a.device)
        return {"z": z}, z, z.sum(-1), noise.uniform((len(a),), a.device) ** 4

    def randomize(self, state: dict, noise=None) -> dict:
        return state

    def features(self, state: dict) -> torch.Tensor:
        return state["z"]


def test_dreams_that_end_leave_the_batch_without_changing_any_result() -> None:
    """The dream drops finished rows from the batch (without --record it compacts); every
    row still gets what it gets alone, and what the uncompacted (record) batch gives."""
    from models.vae import VAE, VAEConfig

    torch.manual_seed(0)
    vae = VAE(VAEConfig(width=4, latent_size=3))
    agent = Agent(vae, RandomEnds(), LinearController(ControllerConfig(3, 4, True)), torch.device("cpu"))
    params, starts, seeds = torch.randn(32, 16), torch.randn(32, 6), torch.arange(32) * 7
    ret, steps, _ = agent.dream(params, starts, seeds, 1.0, 40, survival=False)
    whole, whole_steps, _ = agent.dream(params, starts, seeds, 1.0, 40, survival=False, record=True)
    assert torch.equal(steps, whole_steps) and torch.allclose(ret, whole, atol=1e-5)
    assert (steps < 40).sum() >= 24 and len(set(steps.tolist())) >= 8  # the batch did shrink, unevenly
    for i in (0, 5, 31):
        r1, s1, _ = agent.dream(params[i : i + 1], starts[i : i + 1], seeds[i : i + 1], 1.0, 40, survival=False)
        assert torch.equal(s1, steps[i : i + 1]) and torch.allclose(r1, ret[i : i + 1], atol=1e-5)


def test_dreams_in_a_dropout_m_each_keep_their_own_m_as_the_batch_shrinks() -> None:
    """Dropout's Dream Land: every dream draws its own masks. As finished dreams leave the
    batch, each row keeps its masks: every row's return (M's reward head) is what it gets
    alone, and the masks change the returns (the same M without dropout gives others)."""
    from models.mdrnn import MDRNN, MDRNNConfig
    from models.vae import VAE, VAEConfig

    torch.manual_seed(0)
    vae = VAE(VAEConfig(width=4, latent_size=3))
    plain, dropped = (MDRNN(MDRNNConfig(3, 4, hidden_size=16, dropout=p)).eval() for p in (0.0, 0.3))
    with torch.no_grad():  # dreams whose ends depend on h: most end early, unevenly
        plain.mdn.weight[-1] *= 20
        plain.mdn.bias[-1] = -0.5
    dropped.load_state_dict(plain.state_dict())
    params, starts, seeds = torch.randn(32, 4 * 20), torch.randn(32, 6), torch.arange(32) * 7
    returns = {}
    for name, m in (("plain", plain), ("dropped", dropped)):
        agent = Agent(vae, m, LinearController(ControllerConfig(19, 4, True)), torch.device("cpu"))
        ret, steps, _ = agent.dream(params, starts, seeds, 1.0, 40, survival=False)
        returns[name] = ret
    first_shrink = int(steps.sort().values[7])  # a quarter of the 32 dreams had ended by then
    assert int((steps > first_shrink).sum()) >= 8, steps  # these rows went on in a smaller batch
    for i in range(32):
        r1, s1, _ = agent.dream(params[i : i + 1], starts[i : i + 1], seeds[i : i + 1], 1.0, 40, survival=False)
        assert torch.equal(s1, steps[i : i + 1]) and torch.allclose(r1, ret[i : i + 1], atol=1e-5), i
    assert (returns["plain"] - returns["dropped"]).abs().max() > 0.1


def test_real_envs_in_lockstep_play_each_episode_as_alone(grid_world) -> None:
    """Envs that finish leave V, M and C's batch; the others' episodes do not change, with a
    sampling C and sampled z (each row's noise stream must follow it as the batch shrinks)."""
    cpu = torch.device("cpu")
    vae, m, _ = load_world(grid_world, "mdrnn", cpu)
    agent = Agent(vae, m, LinearController(ControllerConfig(m.feature_size, 4, True, sample=True)), cpu, "sample")
    seeds = list(range(40, 64))  # 24 random Cs: on any CPU's rounding some end early, some late
    params = torch.from_numpy(np.random.default_rng(1).normal(0, 3, (len(seeds), agent.c.cfg.n_params))).float()
    together = agent.real_episodes([make_env("GridWorld-v0") for _ in seeds], params, seeds, 30)
    assert len({e.steps for e in together}) >= 3  # the batch shrank twice while other rows went on
    env = make_env("GridWorld-v0")
    alone = [agent.real_episodes([env], params[b : b + 1], [s], 30)[0] for b, s in enumerate(seeds)]
    assert [(e.ret, e.steps) for e in alone] == [(e.ret, e.steps) for e in together]  # rewards come from the env


def test_a_dying_worker_is_retried(logdir, tmp_path) -> None:
    marker = tmp_path / "died-once"
    env = {**os.environ, "FLAKY_MARKER": str(marker)}
    proc = subprocess.run([sys.executable, "trainagent.py", "--logdir", str(logdir), *SMALL, "--generations", "1",
                           "--eval-episodes", "4", "--env", "tests.envs_for_tests:DyingGrid-v0", "--max-workers", "2"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert marker.exists() and "died with exit code 13" in proc.stdout and "retrying" in proc.stdout
    assert len(metrics(logdir)) == 1


@pytest.mark.parametrize(("env_id", "reason"), [("DyingGrid-v0", "died with exit code 13"),
                                                 ("HangingGrid-v0", "hung for more than 3 s")])
def test_a_broken_worker_stops_the_run_with_a_clear_error(logdir, env_id, reason) -> None:
    start = time.monotonic()
    proc = trainagent(logdir, "--generations", "1", "--env", f"tests.envs_for_tests:{env_id}", "--max-workers", "2",
                      "--timeout", "3", check=False, timeout=300)
    assert proc.returncode == 2 and reason in proc.stderr and "giving up" in proc.stderr
    assert time.monotonic() - start < 240
    assert not (logdir / "agent" / "mdrnn" / "cmaes" / "latest.pt").exists()


def test_missing_m_names_the_command(grid_vae, tmp_path) -> None:
    logdir = Path(shutil.copytree(grid_vae, tmp_path / "exp"))
    proc = trainagent(logdir, "--dream", check=False)
    assert proc.returncode == 2 and "traindynamics.py" in proc.stderr


def test_test_controller_writes_results_and_videos(logdir) -> None:
    proc = run_script("test_controller.py", "--logdir", str(logdir), check=False)
    assert proc.returncode == 2 and "trainagent.py" in proc.stderr  # no C yet
    run_script("test_controller.py", "--logdir", str(logdir), "--random", "--episodes", "4")  # needs none
    assert len(json.loads((logdir / "eval" / "random.json").read_text())["episodes"]) == 4
    trainagent(logdir, "--dream", "--generations", "2")
    run_script("test_controller.py", "--logdir", str(logdir), "--episodes", "6", "--video", "2", "--workers", "2")
    res = json.loads((logdir / "eval" / "mdrnn_cmaes.json").read_text())
    assert len(res["episodes"]) == 6 and "test_controller.py" in res["command"]
    assert all(e["seed"] >= 2**30 for e in res["episodes"])
    assert res["mean"] == pytest.approx(np.mean([e["return"] for e in res["episodes"]]))
    for i in range(2):
        frames = imageio.mimread(logdir / "eval" / "videos" / f"mdrnn_cmaes_episode_{i:03d}.mp4")
        assert len(frames) == res["episodes"][i]["steps"] + 1 and frames[0].shape == (256, 256, 3)
    run_script("test_controller.py", "--logdir", str(logdir), "--episodes", "3", "--dream", "--video", "1")
    dream = json.loads((logdir / "eval" / "mdrnn_cmaes_dream.json").read_text())
    video = logdir / "eval" / "videos" / "mdrnn_cmaes_dream_000.mp4"
    assert len(imageio.mimread(video)) == dream["episodes"][0]["steps"] + 1


@pytest.mark.skipif(shutil.which("xvfb-run") is None, reason="xvfb-run is not installed (apt install xvfb)")
def test_display_under_xvfb(logdir) -> None:
    trainagent(logdir, "--dream", "--generations", "1")
    proc = subprocess.run(["xvfb-run", "-a", "-s", "-screen 0 1400x900x24", sys.executable, "test_controller.py",
                           "--logdir", str(logdir), "--episodes", "2", "--display"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "over 2 episodes" in proc.stdout


def test_display_without_a_screen_is_a_clear_error(logdir) -> None:
    trainagent(logdir, "--dream", "--generations", "1")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    proc = subprocess.run([sys.executable, "test_controller.py", "--logdir", str(logdir), "--display"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "xvfb-run" in proc.stderr



def test_sampled_real_z_episodes_depend_on_their_seeds_only(logdir) -> None:
    """--real-z sample draws V's posterior from the episode's seed: in this process or in
    two workers the same episodes come out, and the run records the flag."""
    trainagent(logdir, "--dream", "--generations", "1")
    runs = []
    for workers in ("0", "2"):
        run_script("test_controller.py", "--logdir", str(logdir), "--episodes", "6", "--real-z", "sample",
                   "--workers", workers)
        runs.append(json.loads((logdir / "eval" / "mdrnn_cmaes.json").read_text()))
    assert runs[0]["episodes"] == runs[1]["episodes"] and "--real-z sample" in runs[1]["command"]


def test_a_checkpoint_that_needs_unpickling_is_refused(logdir) -> None:
    """latest.pt is opened weights-only: a pickled CMA-ES object (the older format) or any
    Python object in it stops the run with one line, and nothing runs from it."""
    trainagent(logdir, "--dream", "--generations", "1")
    latest = logdir / "agent" / "mdrnn" / "cmaes" / "latest.pt"
    ckpt = load_checkpoint(latest)
    older = {k: v for k, v in ckpt.items() if k != "es_state"}
    torch.save({**older, "es": torch.frombuffer(bytearray(b"\x80\x04N."), dtype=torch.uint8)}, latest)
    proc = trainagent(logdir, "--dream", "--generations", "2", check=False)
    assert proc.returncode == 2 and "needs unpickling" in proc.stderr and proc.stderr.count("\n") == 1
    torch.save({**ckpt, "payload": Path("x")}, latest)  # any class outside tensors and plain values
    proc = trainagent(logdir, "--dream", "--generations", "2", check=False)
    assert proc.returncode == 2 and "unpickling" in proc.stderr and proc.stderr.count("\n") == 1


def test_a_search_starts_at_the_c_given_by_init(logdir, tmp_path) -> None:
    trainagent(logdir, "--dream", "--generations", "2")
    stage = logdir / "agent" / "mdrnn" / "cmaes"
    init = tmp_path / "init.pt"
    shutil.copy(stage / "best.pt", init)
    trainagent(logdir, "--dream", "--generations", "1", "--noreload", "--init", str(init))
    assert json.loads((stage / "config.json").read_text())["init"] == str(init)
    assert load_checkpoint(stage / "latest.pt")["identity"]["init"] == load_checkpoint(init)["id"]
    x0 = load_checkpoint(stage / "latest.pt")["es_state"]["x0"]["a"]  # the search's initial point
    assert torch.allclose(torch.as_tensor(x0).float(), load_checkpoint(init)["params"])


def test_a_dream_that_never_ends_is_reported_once(grid_world, capsys) -> None:
    """Survival in a dream whose rows all last to the cap ranks no C above another: say so."""
    cpu = torch.device("cpu")
    vae, m, ids = load_world(grid_world, "mdrnn", cpu)
    agent = Agent(vae, m, LinearController(ControllerConfig(m.feature_size, 4, True)), cpu)
    params = np.zeros((8, agent.c.cfg.n_params))
    for survival in (False, True, True):  # M's reward is not survival; then twice in a dream that always lasts
        dreams = dream_evaluator(agent, grid_world, ids["vae"], 1.0, 1, survival, held_out=False)
        dreams(params, list(range(8)))
        if survival:
            dreams(params, list(range(8)))
    assert capsys.readouterr().out.count("dreams lasted to the 1-step cap") == 2  # once per evaluator
