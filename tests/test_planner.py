"""The CEM planner (agent/planner.py) on stand-in Ms whose rewards are known functions of
the actions, and on the fixed GridWorld's trained M with no C trained at all."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest
import torch

from agent.plan_flags import planner_arguments, planner_flags, planner_settings
from agent.planner import LIGHT, Planner, PlannerConfig
from data.envs import make_env, time_limit
from models.noise import Noise, SeededNoise
from models.world_model import State
from tests.conftest import run_script
from utils.cli import UserError


class StandInM:
    """A world model whose dream is known: the state counts steps and carries an offset x;
    the reward of step k is -|a - (target_k + x)|^2 for a box, or 1 when a is the best
    index of step k (shifted by x) for discrete actions, plus `jitter` times M's own noise.
    p(done) is 1 at step `end` (None: never)."""

    def __init__(self, target: torch.Tensor, discrete: bool, end: int | None = None, jitter: float = 0.0) -> None:
        self.target, self.discrete, self.end, self.jitter = target, discrete, end, jitter
        self.n = 3 if discrete else target.shape[-1]

    def initial_state(self, batch: int, x: torch.Tensor | None = None) -> State:
        x = torch.zeros(batch) if x is None else x
        return {"t": torch.zeros(batch, dtype=torch.long), "x": x.float()}

    def imagine(self, state: State, a: torch.Tensor, temperature: float = 1.0, noise: Noise | None = None):
        t, x = state["t"], state["x"]
        if self.discrete:
            best = (self.target[t] + x.long()) % self.n
            r = (a.argmax(-1) == best).float()
        else:
            r = -(a - (self.target[t] + x[:, None])).pow(2).sum(-1)
        if self.jitter:
            r = r + self.jitter * noise.normal((len(a),), a.device)
        p_done = (t == self.end).float() if self.end is not None else torch.zeros(len(a))
        return {"t": t + 1, "x": x}, None, r, p_done


def box_config(**settings) -> PlannerConfig:
    return PlannerConfig(2, False, (-1.0, -1.0), (1.0, 1.0), **settings)


def test_cem_finds_the_best_action_sequence_in_a_box():
    # the last step's best action lies outside the box: clipped candidates find its edge
    target = torch.tensor([[0.5, -0.3], [-0.6, 0.2], [0.1, 0.8], [1.7, -0.4]])
    planner = Planner(StandInM(target, False), box_config(horizon=4, iterations=8, candidates=300, top_k=30, gamma=1))
    a, plan = planner.plan(planner.m.initial_state(1), None, SeededNoise(torch.tensor([3])))
    assert torch.allclose(a[0], target[0], atol=0.03)
    assert torch.allclose(plan[0, :2], target[1:3], atol=0.03)  # the rest of the plan, shifted by one step
    assert torch.allclose(plan[0, 2], torch.tensor([1.0, -0.4]), atol=0.03)
    assert torch.equal(plan[0, 3], torch.zeros(2))  # a fresh last step: the box's centre
    # one refit with a handful of candidates stays far from it: the search is what finds it
    weak = Planner(planner.m, box_config(horizon=4, iterations=1, candidates=4, top_k=1, gamma=1))
    b, _ = weak.plan(weak.m.initial_state(1), None, SeededNoise(torch.tensor([3])))
    assert (b[0] - target[0]).abs().max() > 0.1


def test_cem_finds_the_best_discrete_sequence():
    target = torch.tensor([2, 0, 1, 1, 2])
    planner = Planner(StandInM(target, True), PlannerConfig(3, True, horizon=5, iterations=6, candidates=200,
                                                            top_k=10, gamma=1))
    a, plan = planner.plan(planner.m.initial_state(2, torch.tensor([0.0, 1.0])), None,
                           SeededNoise(torch.tensor([0, 1])))
    assert a.tolist() == [2, 0]  # env 1's best actions are shifted by one
    assert plan[0, :4].argmax(-1).tolist() == target[1:].tolist()
    assert torch.allclose(plan[:, :4].sum(-1), torch.ones(2, 4))


def test_a_predicted_end_cuts_the_return():
    rewards_to = lambda end: Planner(StandInM(torch.zeros(6, 1), False, end=end),  # noqa: E731
                                     PlannerConfig(1, False, (-1.0,), (1.0,), horizon=6, gamma=0.9))
    a = torch.ones(1, 6, 1)  # reward -1 at every step
    full = rewards_to(None).score(rewards_to(None).m.initial_state(1), a, SeededNoise(torch.tensor([0])))
    cut = rewards_to(2).score(rewards_to(2).m.initial_state(1), a, SeededNoise(torch.tensor([0])))
    assert full.item() == pytest.approx(-sum(0.9**k for k in range(6)))
    assert cut.item() == pytest.approx(-(1 + 0.9 + 0.81))  # steps 0, 1, 2; the end after step 2 stops it
    # an uncertain end weighs each later step by the chance the dream is still going
    half = Planner(HalfEnds(), PlannerConfig(1, False, (-1.0,), (1.0,), horizon=6, gamma=0.9))
    assert half.score({}, a, SeededNoise(torch.tensor([0]))).item() == pytest.approx(-sum(0.45**k for k in range(6)))
    # and the planner steers away from an action whose dream ends early when it scores survival
    planner = Planner(EndsUnlessMoving(), PlannerConfig(2, True, horizon=4, iterations=3, candidates=50, top_k=5,
                                                        survival=True))
    assert planner.plan({"t": torch.zeros(4)}, None, SeededNoise(torch.arange(4)))[0].tolist() == [1] * 4


class HalfEnds:
    """Reward -1 and p(done) 0.5 at every imagined step."""

    def imagine(self, state: State, a: torch.Tensor, temperature: float = 1.0, noise: Noise | None = None):
        return state, None, -torch.ones(len(a)), torch.full((len(a),), 0.5)


class EndsUnlessMoving:
    """Action 0 ends the dream (p(done) = 1); action 1 never does; the reward head says 0."""

    def imagine(self, state: State, a: torch.Tensor, temperature: float = 1.0, noise: Noise | None = None):
        return state, None, torch.zeros(len(a)), a[:, 0].float()


def test_the_lockstep_batch_plans_as_each_env_alone():
    """Envs with different states, noisy rewards: planning them together gives each env the
    actions and plans it gets alone, to the bit."""
    target = torch.tensor([[0.5, -0.3], [-0.6, 0.2], [0.1, 0.8]])
    planner = Planner(StandInM(target, False, jitter=0.3), box_config(horizon=3, iterations=3, candidates=40, top_k=5))
    x, seeds = torch.tensor([0.0, 0.2, -0.1]), torch.tensor([11, 12, 13])
    warm = torch.rand(3, 3, 2) - 0.5
    a, plan = planner.plan(planner.m.initial_state(3, x), warm, SeededNoise(seeds))
    for b in range(3):
        one = slice(b, b + 1)
        a1, plan1 = planner.plan(planner.m.initial_state(1, x[one]), warm[one], SeededNoise(seeds[one]))
        assert torch.equal(a[b], a1[0]) and torch.equal(plan[b], plan1[0])
    other, _ = planner.plan(planner.m.initial_state(3, x), warm, SeededNoise(seeds + 100))
    assert not torch.equal(a, other)  # the env's noise stream is what the draws come from


def test_the_flags_one_script_passes_another_give_the_same_planner(tmp_path):
    p = argparse.ArgumentParser()
    p.add_argument("--method", default="plan")
    planner_arguments(p)
    settings = planner_settings(p.parse_args(["--plan-light", "--plan-top-k", "4", "--plan-survival"]))
    assert settings["candidates"] == LIGHT["candidates"] and settings["top_k"] == 4 and settings["survival"]
    assert planner_settings(p.parse_args(planner_flags(settings))) == settings
    assert planner_settings(p.parse_args(["--method", "cmaes"])) is None
    with pytest.raises(ValueError, match="bounded action box"):  # a Gaussian half an infinite box wide
        PlannerConfig.for_actions({"type": "box", "low": [-float("inf")], "high": [1.0]})
    with pytest.raises(UserError, match="--plan-gamma needs --method plan"):  # never ignored without a word
        planner_settings(p.parse_args(["--method", "cmaes", "--plan-gamma", "0.9"]))
    out = run_script("test_controller.py", "--logdir", str(tmp_path / "none"), "--method", "plan",
                     "--plan-candidates", "10", "--plan-top-k", "20", check=False)
    assert out.returncode == 2 and "top_k <= candidates" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_the_planner_solves_the_fixed_gridworld_with_no_controller(fixed_world, tmp_path):
    """PlaNet's claim on a small case: the RSSM alone, searched at every step, plays the fixed
    map (random policy: 22.5%). The RSSM is the sturdy M for it: 95.5-100% over three seeds of
    V and M, where the MDN-RNN's false rewards give 56.5-98% from one training run to another
    (docs/findings.md)."""
    logdir = Path(shutil.copytree(fixed_world, tmp_path / "exp"))
    assert not (logdir / "agent").exists()
    plan = ["--logdir", str(logdir), "--dynamics", "rssm", "--method", "plan", "--plan-light"]
    out = run_script("test_controller.py", *plan, "--episodes", "100", "--workers", "2",
                     "--results", str(tmp_path / "plan.json"))
    result = json.loads((logdir / "eval" / "rssm_plan.json").read_text())
    assert result["success_rate"] >= 0.95, out.stdout
    ledger = json.loads((tmp_path / "plan.json").read_text())
    assert ledger["controller"] == "plan" and ledger["evaluation"]["planner"]["candidates"] == 64
    # the planner collects, as a round's C does: its episodes reach the goal that random play rarely does
    run_script("generation_script.py", "--policy", "controller", *plan, "--rollouts", "6", "--noise", "0.05",
               "--rootdir", str(tmp_path / "collected"))
    meta = json.loads((tmp_path / "collected" / "dataset.json").read_text())
    assert meta["controller"]["method"] == "plan" and meta["controller"]["planner"]["top_k"] == 8
    assert sum(e["return"] > 0.5 for e in meta["episodes"].values()) >= 4


def test_every_later_stage_acts_at_the_action_repeat_m_learned(fixed_world, tmp_path):
    """The dataset's action repeat reaches evaluation (its ledger, its time limit in agent
    steps) and collection; collecting at another repeat is refused in one line."""
    logdir = Path(shutil.copytree(fixed_world, tmp_path / "exp"))
    repeated = tmp_path / "repeat2"
    repeated.mkdir()
    meta_path = logdir / "latents" / "meta.json"
    latents = json.loads(meta_path.read_text())
    source = json.loads((Path(latents["dataset"]) / "dataset.json").read_text())
    (repeated / "dataset.json").write_text(json.dumps({**source, "action_repeat": 2}))
    meta_path.write_text(json.dumps({**latents, "dataset": str(repeated)}))  # M's data, as if it had repeat 2
    run_script("test_controller.py", "--logdir", str(logdir), "--method", "plan", "--plan-light", "--plan-candidates",
               "16", "--plan-top-k", "4", "--episodes", "4", "--workers", "1", "--results", str(tmp_path / "r.json"))
    evaluation = json.loads((tmp_path / "r.json").read_text())["evaluation"]
    assert evaluation["action_repeat"] == 2 and evaluation["max_steps"] == -(-time_limit(make_env(source["env"])) // 2)
    flags = ["--policy", "controller", "--logdir", str(logdir), "--method", "plan", "--plan-light", "--rollouts", "1"]
    run_script("generation_script.py", *flags, "--rootdir", str(tmp_path / "c"))
    assert json.loads((tmp_path / "c" / "dataset.json").read_text())["action_repeat"] == 2
    out = run_script("generation_script.py", *flags, "--action-repeat", "1", "--rootdir", str(tmp_path / "d"),
                     check=False)
    assert out.returncode == 2 and "collect with the same" in out.stderr and len(out.stderr.strip().splitlines()) == 1
