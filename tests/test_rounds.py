"""Online rounds continue rather than restart: only new episodes go through V, M keeps its
weights and optimizer on grown data, C searches on from its best in a new M, and the round
driver resumes at the step a kill interrupted."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from agent.cmaes import SearchSettings, run_search
from agent.episodes import Episode
from agent.keep import keep_if_better, read_kept, seconds_through
from data.dataset import open_dataset, rollout_path
from data.latents import latent_cache
from data.rollouts import load_rollout, save_rollout
from models.controller import ControllerConfig
from rounds import Rounds
from tests.conftest import FIXED_M, ROOT, run_script
from trainagent import initial_point
from utils.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from utils.cli import UserError
from utils.logdir import StageDir
from utils.training import Trainer, TrainSettings


class CountingV(nn.Module):
    """A stand-in V whose latent statistics are a frame's mean colour; it counts frames."""

    def __init__(self) -> None:
        super().__init__()
        self.frames = 0

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        self.frames += len(x)
        return x.mean((2, 3)).repeat(1, 2)  # (B, 6): "mu" and "logvar"


def episode(rng: np.random.Generator, steps: int) -> dict:
    return {"observations": rng.integers(0, 255, (steps, 64, 64, 3), dtype=np.uint8),
            "actions": rng.integers(0, 4, steps), "rewards": rng.normal(size=steps).astype(np.float32),
            "terminals": np.eye(steps, dtype=bool)[-1], "truncations": np.zeros(steps, bool)}


def test_the_latent_cache_encodes_only_new_episodes(tmp_path) -> None:
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    (data / "controller_abc").mkdir(parents=True)
    for i, n in enumerate((5, 7, 3)):
        save_rollout(rollout_path(data, i), episode(rng, n))
    v, cpu = CountingV(), torch.device("cpu")
    latent_cache(tmp_path / "exp", data, open_dataset(data), v, "v1", cpu)
    assert v.frames == 15
    for i, n in enumerate((4, 6)):  # a round's episodes, in a subfolder (listed before the old ones)
        save_rollout(rollout_path(data / "controller_abc", i), episode(rng, n))
    grown = latent_cache(tmp_path / "exp", data, open_dataset(data), v, "v1", cpu)
    assert v.frames == 15 + 10
    whole = latent_cache(tmp_path / "other", data, open_dataset(data), CountingV(), "v1", cpu)
    for k in ("stats", "actions", "rewards", "terminals", "truncations", "offsets"):
        assert np.array_equal(getattr(grown, k), getattr(whole, k)), k
    assert grown.names[:2] == ["controller_abc/rollout_000000.npz", "controller_abc/rollout_000001.npz"]
    latent_cache(tmp_path / "exp", data, open_dataset(data), v, "v2", cpu)  # another V: everything again
    assert v.frames == 25 + 25


def fit(stage: StageDir, model: nn.Module, data: dict, x: torch.Tensor, epochs: int = 2) -> Trainer:
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    trainer = Trainer(stage, model, opt, TrainSettings(epochs), {"model": "linear"}, data)
    trainer.restore(stage.resume_state("cpu"))
    loss = lambda b: ((model(b) - 1).pow(2).mean(),) * 2  # noqa: E731
    trainer.fit(lambda epoch, start: iter([x] * (4 - start)), 4, lambda b: (loss(b)[0], {"loss": loss(b)[1].detach()}),
                lambda: {"loss": loss(x)[0]})
    return trainer


def test_m_continues_from_its_weights_when_the_data_grows(tmp_path) -> None:
    torch.manual_seed(0)
    stage = StageDir(tmp_path, "dynamics/toy")
    stage.start(noreload=False)
    x = torch.randn(8, 3)
    first = fit(stage, nn.Linear(3, 1), {"episodes": 10}, x)
    trained = {k: v.clone() for k, v in first.model.state_dict().items()}
    torch.manual_seed(123)  # a fresh model would start elsewhere
    again = fit(stage, nn.Linear(3, 1), {"episodes": 10}, x)  # same data: nothing to do
    assert all(torch.equal(again.model.state_dict()[k], v) for k, v in trained.items())
    assert again.progress.global_epoch == 2 and again.progress.round == 0
    torch.manual_seed(123)
    model = nn.Linear(3, 1)
    stage2 = Trainer(stage, model, torch.optim.Adam(model.parameters()), TrainSettings(2), {"model": "linear"},
                     {"episodes": 12})
    stage2.restore(stage.resume_state("cpu"))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in trained.items())  # continued, not restarted
    assert stage2.optimizer.state_dict()["state"][0]["step"] == 8  # Adam's moments came along
    grown = fit(stage, nn.Linear(3, 1), {"episodes": 12}, x)
    assert (grown.progress.round, grown.progress.epoch0, grown.progress.global_epoch) == (1, 2, 4)
    steps = [json.loads(ln)["step"] for ln in stage.metrics.read_text().splitlines()]
    assert steps == [1, 1, 2, 2, 3, 3, 4, 4]  # the round's epochs are numbered after the first's
    assert load_checkpoint(stage.best)["round"] == 1  # judged on the new validation data


def quadratic(target: np.ndarray):
    """A stand-in evaluator: return = -|x - target|^2 whatever the seed."""
    def evaluate(params: np.ndarray, seeds: list[int]) -> tuple[np.ndarray, list[Episode]]:
        r = -((np.asarray(params) - target) ** 2).sum(1)
        return r, [Episode(float(v), 1) for v in r]
    return evaluate


def test_cmaes_searches_on_from_its_best_when_m_changes(tmp_path) -> None:
    stage = StageDir(tmp_path, "agent/toy/cmaes")
    stage.start(noreload=False)
    s = SearchSettings(pop_size=8, n_samples=1, sigma=0.3, generations=15, eval_every=5, eval_episodes=1,
                       round_sigma=0.05)
    identity = {"dynamics_id": "m0", "pop_size": 8}
    first = run_search(stage, quadratic(np.ones(4)), s, 4, identity, {})
    best = load_checkpoint(stage.best)["params"].double().numpy()
    second = run_search(stage, quadratic(np.ones(4)), s, 4, {**identity, "dynamics_id": "m1"}, {})
    assert (second.round, second.round_start, second.generation) == (1, 15, 30)
    # the round's search started at C's best with its own small step: its first candidates sit near it
    rows = [json.loads(ln) for ln in stage.metrics.read_text().splitlines()]
    assert rows[15]["fitness_best"] >= -((best - 1) ** 2).sum() - 0.2
    assert rows[15]["sigma"] < 0.06 and first.best_score > -0.5
    with pytest.raises(CheckpointError, match="pop_size"):
        run_search(stage, quadratic(np.ones(4)), s, 4, {"dynamics_id": "m2", "pop_size": 16}, {})


def test_a_fresh_round_searches_from_zeros_not_from_the_best(tmp_path) -> None:
    stage = StageDir(tmp_path, "agent/toy/cmaes")
    stage.start(noreload=False)
    s = SearchSettings(pop_size=8, n_samples=1, sigma=0.3, generations=15, eval_every=5, eval_episodes=1,
                       round_sigma=0.05, round_from="fresh")
    first = run_search(stage, quadratic(np.ones(4)), s, 4, {"dynamics_id": "m0"}, {})
    second = run_search(stage, quadratic(np.ones(4)), s, 4, {"dynamics_id": "m1"}, {})
    assert first.best_score > -0.5 and (second.round, second.generation) == (1, 30)
    rows = [json.loads(ln) for ln in stage.metrics.read_text().splitlines()]
    assert rows[15]["fitness_best"] < -3  # near zeros (-4), not near the best found before
    assert np.abs(second.es.mean - 1).max() < np.abs(np.zeros(4) - 1).max()  # and it still learns


def test_searches_start_at_the_initial_point_given(tmp_path) -> None:
    """x0 starts round 0's searches (restarts too) and a fresh round's, where zeros would."""
    stage = StageDir(tmp_path, "agent/toy/cmaes")
    stage.start(noreload=False)
    target = np.ones(4)
    s = SearchSettings(pop_size=8, n_samples=1, sigma=0.05, generations=5, eval_every=5, eval_episodes=1, restarts=2,
                       x0=(0.9,) * 4)
    run_search(stage, quadratic(target), s, 4, {"dynamics_id": "m0"}, {})
    fresh = replace(s, round_from="fresh", x0=(1.1,) * 4, restarts=1)
    run_search(stage, quadratic(target), fresh, 4, {"dynamics_id": "m1"}, {})
    rows = [json.loads(ln) for ln in stage.metrics.read_text().splitlines()]
    assert len(rows) == 15
    for k in (0, 5, 10):  # each search's first candidates lie near its x0 (-0.04), far from zeros (-4)
        assert rows[k]["fitness_mean"] > -0.5, (k, rows[k])


def test_a_search_starts_at_the_kept_c_or_at_init_and_refuses_another_controller(tmp_path) -> None:
    cfg = ControllerConfig(3, 2, True)
    a = argparse.Namespace(logdir=tmp_path, dynamics="mdrnn", round_from="kept", init=None)
    assert initial_point(a, cfg) == (None, None)  # no kept C yet: zeros
    other = tmp_path / "other.pt"
    other_id = save_checkpoint(other, {"controller": cfg.to_dict(), "params": torch.ones(cfg.n_params)})
    x0, init_id = initial_point(argparse.Namespace(**{**vars(a), "init": other}), cfg)
    assert x0.sum() == cfg.n_params and init_id == other_id  # --init until a C is kept
    kept = tmp_path / "kept" / "agent" / "mdrnn" / "cmaes" / "best.pt"
    kept.parent.mkdir(parents=True)
    save_checkpoint(kept, {"controller": cfg.to_dict(), "params": torch.arange(cfg.n_params).float()})
    x0, init_id = initial_point(argparse.Namespace(**{**vars(a), "init": other}), cfg)
    assert x0.tolist() == list(range(cfg.n_params)) and init_id == other_id  # then the kept C
    x0, _ = initial_point(argparse.Namespace(**{**vars(a), "round_from": "best", "init": other}), cfg)
    assert x0.sum() == cfg.n_params  # --init where the rounds start elsewhere
    with pytest.raises(UserError, match="differs in sample"):  # the same parameter count, another C
        initial_point(a, ControllerConfig(3, 2, True, sample=True))
    proc = run_script("rounds.py", "--logdir", str(tmp_path / "exp"), "--dataset", str(tmp_path),
                      "--c-args=--dream --round-from kept", check=False)
    assert proc.returncode == 2 and "needs --keep-best" in proc.stderr


def test_restarts_search_again_from_the_start_and_keep_the_best_over_all(tmp_path) -> None:
    s = SearchSettings(pop_size=8, n_samples=1, sigma=0.3, generations=10, eval_every=5, eval_episodes=1, restarts=3)
    whole = StageDir(tmp_path / "whole", "agent/toy/cmaes")
    whole.start(noreload=False)
    state = run_search(whole, quadratic(np.ones(4)), s, 4, {"dynamics_id": "m0"}, {})
    rows = [json.loads(ln) for ln in whole.metrics.read_text().splitlines()]
    assert state.generation == 30 and len(rows) == 30
    for k in (10, 20):  # each search starts again at zeros (-4), at its own seed
        assert rows[k]["fitness_best"] < -2 < rows[k - 1]["fitness_best"]
    assert len({rows[k]["fitness_mean"] for k in (0, 10, 20)}) == 3
    best = load_checkpoint(whole.best)
    assert best["score"] == max(r["select_mean"] for r in rows if "select_mean" in r) == state.best_score
    assert sum("select_mean" in r for r in rows) == 6  # the last candidates of every search are judged
    # killed right where a search ended (one search run, then three asked for): the same searches
    cut = StageDir(tmp_path / "cut", "agent/toy/cmaes")
    cut.start(noreload=False)
    run_search(cut, quadratic(np.ones(4)), replace(s, restarts=1), 4, {"dynamics_id": "m0"}, {})
    again = run_search(cut, quadratic(np.ones(4)), s, 4, {"dynamics_id": "m0"}, {})
    strip = lambda path: [{k: v for k, v in json.loads(ln).items() if k != "seconds"}  # noqa: E731
                          for ln in path.read_text().splitlines()]
    assert strip(cut.metrics) == strip(whole.metrics) and again.best_score == state.best_score


def test_a_round_before_any_selection_starts_at_the_search_mean(tmp_path) -> None:
    stage = StageDir(tmp_path, "agent/toy/cmaes")
    stage.start(noreload=False)
    s = SearchSettings(pop_size=8, n_samples=1, generations=3, eval_every=100, eval_episodes=1)
    run_search(stage, quadratic(np.ones(4)), s, 4, {"dynamics_id": "m0"}, {})
    stage.best.unlink()  # as if killed before its first selection
    again = run_search(stage, quadratic(np.ones(4)), s, 4, {"dynamics_id": "m1"}, {})
    assert (again.round, again.generation) == (1, 6) and stage.best.exists()


def test_a_dream_search_chooses_best_pt_on_the_selection_world(tmp_path) -> None:
    """Fitness pulls the search towards one target (the dream) while selection scores another
    (the real env): best.pt is the judged candidate nearest the second, and only selection
    episodes count as select_frames."""
    stage = StageDir(tmp_path, "agent/toy/cmaes")
    stage.start(noreload=False)
    s = SearchSettings(pop_size=8, n_samples=2, sigma=0.3, generations=20, eval_every=2, eval_episodes=3)
    dream, real = np.ones(4), np.zeros(4)
    judged: list[np.ndarray] = []

    def select(params: np.ndarray, seeds: list[int]) -> tuple[np.ndarray, list[Episode]]:
        judged.append(params[0].copy())
        r = -((params - real) ** 2).sum(1)
        return r, [Episode(float(v), 5) for v in r]

    state = run_search(stage, quadratic(dream), s, 4, {"dynamics_id": "m0"}, {}, select)
    best = load_checkpoint(stage.best)
    scores = [-((p - real) ** 2).sum() for p in judged]
    assert len(judged) == 10 and best["score"] == pytest.approx(max(scores))
    assert torch.allclose(best["params"].double(), torch.from_numpy(judged[int(np.argmax(scores))]), atol=1e-6)
    assert np.abs(state.es.mean - dream).max() < np.abs(state.es.mean - real).max()  # fitness still led the search
    assert best["score"] > -((state.es.mean - real) ** 2).sum()  # and best.pt is not simply the last candidate
    rows = [json.loads(ln) for ln in stage.metrics.read_text().splitlines()]
    assert rows[-1]["select_frames"] == 10 * 3 * 5
    assert rows[-1]["frames"] == 20 * 8 * 2 + 10 * 3 * 5  # the stand-in dream's episodes are 1 step long


def test_real_frames_count_the_real_selection_episodes_of_a_dream_controller(tmp_path) -> None:
    from rounds import real_frames
    data, c = tmp_path / "data", tmp_path / "exp" / "agent" / "mdrnn" / "cmaes"
    data.mkdir()
    c.mkdir(parents=True)
    (data / "dataset.json").write_text(json.dumps({"frames": 100, "action_repeat": 2}))
    (c / "metrics.jsonl").write_text(json.dumps({"step": 1, "frames": 5000, "select_frames": 30}) + "\n")
    a = argparse.Namespace(logdir=tmp_path / "exp", dataset=data, dynamics="mdrnn", method="cmaes")
    for config, frames in (({"dream": True, "select": "dream"}, 200), ({"dream": True, "select": "real"}, 260),
                           ({"dream": False, "select": "real"}, 10200)):  # C's agent steps times the repeat too
        (c / "config.json").write_text(json.dumps(config))
        assert real_frames(a) == frames, config


def test_the_round_driver_resumes_at_the_step_it_stopped_in(tmp_path) -> None:
    a = argparse.Namespace(logdir=tmp_path, dynamics="mdrnn", method="cmaes", horizon=10)
    calls: list[str] = []

    def work(name: str, fail: bool = False):
        def run() -> dict:
            calls.append(name)
            if fail:
                raise RuntimeError("killed")
            return {f"{name}_value": 1.0}
        return run

    rounds = Rounds(a)
    rounds.step("collect", work("collect"))
    with pytest.raises(RuntimeError):
        rounds.step("dynamics", work("dynamics", fail=True))
    again = Rounds(a)  # a rerun after the kill
    for name in ("collect", "dynamics", "controller"):
        again.step(name, work(name))
    assert calls == ["collect", "dynamics", "dynamics", "controller"]
    assert again.state["done"] == ["collect", "dynamics", "controller"]
    assert again.state["values"]["collect_value"] == 1.0 and Path(tmp_path / "rounds" / "state.json").exists()


def rounds_cmd(logdir: Path, data: Path) -> list[str]:
    """PlaNet's loop at toy size on the fixed map: the planner collects, M continues, the planner is scored."""
    return [sys.executable, str(ROOT / "rounds.py"), "--logdir", str(logdir), "--dataset", str(data), "--method",
            "plan", "--plan-horizon", "6", "--plan-iterations", "2", "--plan-candidates", "16", "--plan-top-k", "4",
            "--rounds", "1", "--collect", "20", "--eval-episodes", "20", "--threads", "2",
            "--m-args", "--epochs 2 --seq-len 16 --hidden-size 32 --reward-weight 5 --done-weight 5 --nodreams",
            "--m-args-later", "--epochs 1"]


def test_a_killed_round_resumes_to_the_result_of_an_uninterrupted_one(tmp_path) -> None:
    """rounds.py killed (SIGKILL, the whole process group) in round 1 after collecting and
    rerun ends with the same metrics, M and scores as a run never interrupted. Round 1's M
    continues for the --m-args-later epochs, not round 0's."""
    data = tmp_path / "data"
    run_script("generation_script.py", "--env", "GridWorldFixed-v0", "--rootdir", str(data), "--rollouts", "300",
               "--threads", "2")
    run_script("trainvae.py", "--logdir", str(tmp_path / "v"), "--dataset", str(data), "--epochs", "1", "--width", "8",
               "--recon", "bce", "--kl-tolerance", "2", "--lr", "2e-3")
    runs, m = {}, {}
    logdir, dataset = tmp_path / "run", tmp_path / "run_data"  # the same paths for both runs, as a rerun has
    for name in ("whole", "killed"):
        shutil.rmtree(logdir, ignore_errors=True)
        shutil.rmtree(dataset, ignore_errors=True)
        shutil.copytree(data, dataset)
        shutil.copytree(tmp_path / "v", logdir)
        cmd = rounds_cmd(logdir, dataset)
        if name == "killed":
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    start_new_session=True)
            state = logdir / "rounds" / "state.json"
            deadline = time.monotonic() + 300
            while not (state.exists() and "collect" in json.loads(state.read_text())["done"]):
                assert proc.poll() is None and time.monotonic() < deadline, "rounds.py ended before round 1 collected"
                time.sleep(0.2)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            assert "evaluate" not in json.loads(state.read_text())["done"]
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, timeout=600)
        runs[name] = [{k: v for k, v in json.loads(line).items() if not k.startswith("seconds")}
                      for line in (logdir / "rounds" / "metrics.jsonl").read_text().splitlines()]
        m[name] = load_checkpoint(logdir / "dynamics" / "mdrnn" / "latest.pt")
        epochs = (logdir / "dynamics" / "mdrnn" / "metrics.jsonl").read_text().splitlines()
        assert sorted({json.loads(e)["step"] for e in epochs}) == [1, 2, 3]  # 2 epochs in round 0, 1 in round 1
    assert [r["step"] for r in runs["whole"]] == [0, 1]
    assert runs["killed"] == runs["whole"]
    assert runs["whole"][1]["real_frames"] > runs["whole"][0]["real_frames"]  # the planner's episodes joined M's data
    collected = json.loads((dataset / "run_round01" / "dataset.json").read_text())["controller"]
    assert collected["method"] == "plan" and collected["planner"]["horizon"] == 6  # the flags reached the collector
    for k, w in m["whole"]["model"].items():
        assert torch.equal(w, m["killed"]["model"][k]), k


def test_rounds_close_the_hole_that_a_dream_controller_exploits(fixed_world, tmp_path) -> None:
    """M learns from random play with every episode that met the hazard removed, so its dream
    has no hazard, and C evolved in that dream walks into it: round 0's dream score is far
    above the real one. C's own episodes show M the hazard, and after three rounds the gap is
    gone and C reaches the goal. (Three data seeds: gap 0.87-1.43 -> at most 0.08, success
    37-59% -> 95-99%; C evolved for the same 160 generations in the first M, with no rounds:
    48% and 64%, gap 1.36 and 0.80.)"""
    data = tmp_path / "data"
    run_script("generation_script.py", "--env", "GridWorldFixed-v0", "--rootdir", str(data), "--rollouts", "300",
               "--threads", "2")
    hazards = [f for f in open_dataset(data) if (load_rollout(f)["rewards"] < -0.5).any()]
    assert len(hazards) > 20
    meta = json.loads((data / "dataset.json").read_text())
    for f in hazards:
        f.unlink()
        meta["frames"] -= meta["episodes"].pop(f.name)["frames"]
    (data / "dataset.json").write_text(json.dumps({**meta, "episodes_count": len(meta["episodes"])}))
    runs = {}
    # "alone" first, before the rounds add C's episodes to the data: the same search with no new data
    for name, rounds, generations, keep in (("alone", "0", "160", "0"), ("exp", "3", "40", "20")):
        logdir = tmp_path / name
        shutil.copytree(fixed_world / "vae", logdir / "vae")  # V has seen the hazard; M will not
        run_script("rounds.py", "--logdir", str(logdir), "--dataset", str(data), "--rounds", rounds, "--collect", "200",
                   "--noise", "0.2", "--eval-episodes", "100", "--threads", "2", "--m-args", shlex.join(FIXED_M),
                   "--c-args", f"--dream --pop-size 32 --n-samples 8 --generations {generations} --discrete sample",
                   "--keep-best", keep)
        runs[name] = [json.loads(line) for line in (logdir / "rounds" / "metrics.jsonl").read_text().splitlines()]
    rows, alone = runs["exp"], runs["alone"][0]
    gaps = [r["dream_mean"] - r["real_mean"] for r in (*rows, alone)]
    # C exploits the missing hazard: how far each search gets into the hole varies with the
    # CPU's float rounding (0.15-0.86 in round 0, 0.27-0.54 alone), so one of the two must
    assert max(gaps[0], gaps[-1]) > 0.3, gaps
    collected = json.loads((data / "exp_round01" / "dataset.json").read_text())["episodes"].values()
    assert sum(e["return"] < -0.5 for e in collected) > 0  # ... and so shows it to M
    assert abs(gaps[-2]) < 0.25 and rows[-1]["real_mean"] > max(rows[0]["real_mean"], alone["real_mean"]) + 0.3, \
        (gaps, [r["real_mean"] for r in (*rows, alone)])
    assert rows[-1]["real_success"] >= 0.85, rows[-1]

    # --keep-best: the kept C is the round judged best, with the M it was trained in, and it
    # replays its judgement from its own logdir (the same 20 real episodes, the same score)
    kept = json.loads((tmp_path / "exp" / "kept" / "kept.json").read_text())
    judged = [r["keep_mean"] for r in rows]
    assert kept["round"] == judged.index(max(judged)) and kept["mean"] == max(judged)
    assert [j["round"] for j in kept["judged"]] == [0, 1, 2, 3] and not (tmp_path / "alone" / "kept").exists()
    c = load_checkpoint(tmp_path / "exp" / "kept" / "agent" / "mdrnn" / "cmaes" / "best.pt")
    assert c["identity"]["dynamics_id"] == kept["judged"][kept["round"]]["dynamics_id"]
    ledger = tmp_path / "kept_seed0.json"
    run_script("test_controller.py", "--logdir", str(tmp_path / "exp" / "kept"), "--seed", str(kept["first_seed"]),
               "--episodes", "20", "--workers", "2", "--results", str(ledger))
    record = json.loads(ledger.read_text())
    assert record["mean"] == pytest.approx(kept["mean"], abs=1e-6)
    assert record["dream_only"] is False and record["evaluation"]["kept"]["round"] == kept["round"]
    assert "rounds" in record["commands"] and "--keep-best" in record["commands"]["rounds"][0]
    assert record["seconds"]["rounds"] == pytest.approx(sum(r["seconds"] for r in rows[: kept["round"] + 1]), abs=0.01)
    assert record["seconds"]["eval"] < record["seconds"]["rounds"]  # this evaluation's own seconds
    judge_frames = sum(j["frames"] for j in kept["judged"])
    assert rows[-1]["real_frames"] >= judge_frames > 0
    run_script("test_controller.py", "--logdir", str(tmp_path / "exp" / "kept"), "--dream", "--episodes", "5")


def stage_files(logdir: Path, tag: str) -> None:
    """Stand-in V, M and C checkpoints whose bytes say which round wrote them."""
    for folder in ("vae", "dynamics/mdrnn", "agent/mdrnn/cmaes"):
        (logdir / folder).mkdir(parents=True, exist_ok=True)
        (logdir / folder / "best.pt").write_text(f"{folder} {tag}")
        (logdir / folder / "latest.pt").write_text("not kept")
    (logdir / "latents").mkdir(exist_ok=True)
    (logdir / "latents" / "meta.json").write_text("{}")


def test_keep_best_keeps_the_best_round_and_survives_a_kill_between_renames(tmp_path) -> None:
    seeds = [5, 6, 7]
    for r, score in enumerate((1.0, 3.0, 2.0, 3.0)):  # round 3 ties round 1: the earlier stays
        stage_files(tmp_path, f"round {r}")
        judged = {"mean": score, "std": 0.0, "frames": 10, "c_id": f"c{r}", "dynamics_id": f"m{r}",
                  "returns": [score] * 3, "workers": 2, "max_steps": 100}
        record = keep_if_better(tmp_path, "mdrnn", "cmaes", r, seeds, judged)
    assert record["round"] == 1 and record["mean"] == 3.0 and (record["c_id"], record["dynamics_id"]) == ("c1", "m1")
    assert [j["round"] for j in record["judged"]] == [0, 1, 2, 3]
    kept = tmp_path / "kept"
    for folder in ("vae", "dynamics/mdrnn", "agent/mdrnn/cmaes"):
        assert (kept / folder / "best.pt").read_text() == f"{folder} round 1"
        assert not (kept / folder / "latest.pt").exists()
    (tmp_path / "kept").rename(tmp_path / "kept.old")  # killed after the old copy moved aside
    (tmp_path / "kept.new").mkdir()  # ... and with a half-built new one
    stage_files(tmp_path, "round 4")
    again = keep_if_better(tmp_path, "mdrnn", "cmaes", 4, seeds, {**judged, "mean": 5.0, "c_id": "c4"})
    assert again["round"] == 4 and [j["round"] for j in again["judged"]] == [0, 1, 2, 3, 4]
    assert (kept / "vae" / "best.pt").read_text() == "vae round 4" and read_kept(kept) == again
    assert not (tmp_path / "kept.old").exists() and not (tmp_path / "kept.new").exists()
    rerun = keep_if_better(tmp_path, "mdrnn", "cmaes", 4, seeds, {**judged, "mean": 5.0, "c_id": "c4"})
    assert [j["round"] for j in rerun["judged"]] == [0, 1, 2, 3, 4]  # a repeated round is judged once
    with pytest.raises(UserError, match="--keep-best"):  # other episodes: scores would not compare
        keep_if_better(tmp_path, "mdrnn", "cmaes", 5, [6, 7, 8], judged)


def test_a_kept_c_costs_the_rounds_up_to_its_own(tmp_path) -> None:
    """The kept C's ledger counts the rounds' seconds through its round, and none while that
    round has not logged its metrics."""
    (tmp_path / "rounds").mkdir()
    (tmp_path / "rounds" / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": r, "seconds": s}) + "\n" for r, s in enumerate((100.0, 20.5, 7.0))))
    assert seconds_through(tmp_path, 0) == 100.0
    assert seconds_through(tmp_path, 1) == 120.5
    assert seconds_through(tmp_path, 3) is None
