"""The actor-critic in imagination: lambda-returns, frozen M, learning on toy worlds, and
trainagent.py --method ac end to end (resume, test_controller, dream GIFs, errors)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gymnasium as gym
import imageio.v2 as imageio
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from agent.imagination import ImaginationLearner, ImaginationSettings, lambda_return
from models.actor_critic import Actor, ActorConfig, ActorController, Critic, flat_params
from models.mdrnn import MDRNN, MDRNNConfig
from models.rssm import RSSM, RSSMConfig
from models.tssm import TSSM, TSSMConfig
from tests.conftest import run_script
from utils.checkpoint import load_checkpoint

# --- lambda-returns ---------------------------------------------------------------------

def n_step_mix(r: list[float], v: list[float], d: list[float], lam: float, k: int) -> float:
    """R^lambda_k written out as its weighted mix of n-step returns (not the recursion)."""
    H = len(r)
    total, weight_sum = 0.0, 0.0
    for n in range(1, H - k + 1):
        G, disc = 0.0, 1.0
        for j in range(k, k + n):
            G += disc * r[j]
            disc *= d[j]
        G += disc * v[k + n]
        w = (1 - lam) * lam ** (n - 1) if n < H - k else lam ** (H - k - 1)
        total, weight_sum = total + w * G, weight_sum + w
    assert weight_sum == pytest.approx(1.0)
    return total


def test_lambda_return_matches_the_n_step_mix_by_hand() -> None:
    r, v, d = [0.5, -1.0, 2.0, 0.25], [1.0, 3.0, -2.0, 0.5, 4.0], [0.9, 0.8, 0.99, 0.7]
    lam = 0.6
    R = lambda_return(torch.tensor(r), torch.tensor(v), torch.tensor(d), lam)
    assert R.tolist() == pytest.approx([n_step_mix(r, v, d, lam, k) for k in range(4)])
    # the last step by hand: r_3 + d_3 v_4, whatever lambda is
    assert float(R[3]) == pytest.approx(0.25 + 0.7 * 4.0)
    # and one step of the recursion by hand
    assert float(R[2]) == pytest.approx(2.0 + 0.99 * ((1 - lam) * 0.5 + lam * float(R[3])))


def test_lambda_return_weights_sum_to_one_and_terminals_cut() -> None:
    H, lam = 6, 0.95
    ones = torch.ones(H)
    # no reward, no discounting, a constant value: any mix of n-step returns is that value
    assert torch.allclose(lambda_return(torch.zeros(H), torch.full((H + 1,), 3.0), ones, lam), torch.full((H,), 3.0))
    # an episode that ends at step 2 (discount 0) gets nothing from later rewards or values
    r, v = torch.arange(H, dtype=torch.float), torch.full((H + 1,), 100.0)
    d = ones.clone()
    d[2] = 0.0
    R = lambda_return(r, v, d, lam)
    assert float(R[2]) == pytest.approx(2.0)
    assert float(R[0]) == pytest.approx(n_step_mix(r.tolist(), v.tolist(), d.tolist(), lam, 0))
    r2, v2 = r.clone(), v.clone()
    r2[3:], v2[3:] = -50.0, -1000.0  # what lies beyond the end
    assert torch.equal(lambda_return(r2, v2, d, lam)[:3], R[:3])
    # batched along other axes: each column is its own return
    batch = lambda_return(torch.stack([r, r * 2], 1), torch.stack([v, v], 1), torch.stack([d, ones], 1), lam)
    assert torch.allclose(batch[:, 0], R)


# --- M stays frozen, gradients reach the actor --------------------------------------------

def small_m(kind: str, action_size: int) -> nn.Module:
    z = 6
    if kind.startswith("mdrnn"):  # mdrnn-dropout: every imagined rollout has its own masks
        return MDRNN(MDRNNConfig(z, action_size, hidden_size=16, gaussians=3, dropout=0.3 if "dropout" in kind else 0))
    if kind == "tssm":
        return TSSM(TSSMConfig(z, action_size, hidden_size=16, layers=1, heads=2, context=4, dropout=0.0))
    classes = 4 if kind == "rssm-categorical" else 0
    return RSSM(RSSMConfig(z, action_size, deter=16, stoch=4, classes=classes, hidden_size=16))


def start_states(m: nn.Module, action_size: int, n: int = 8) -> dict[str, torch.Tensor]:
    state = m.initial_state(n)
    a = None
    for _ in range(3):
        state = m.observe(state, torch.randn(n, m.z_size), a)
        a = torch.rand(n, action_size)
    return state


@pytest.mark.parametrize("kind", ["mdrnn", "mdrnn-dropout", "rssm", "rssm-categorical", "tssm"])
@pytest.mark.parametrize("discrete", [False, True])
def test_update_changes_the_actor_through_m_and_never_m(kind, discrete) -> None:
    """With no entropy bonus and gradients through M, the actor's only gradient path is
    through M's computations; M's weights must come out bit-identical."""
    torch.manual_seed(0)
    action_size = 3 if discrete else 2
    m = small_m(kind, action_size).eval()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    space = gym.spaces.Discrete(3) if discrete else gym.spaces.Box(-1, 1, (2,), np.float32)
    actor = Actor(ActorConfig.for_space(m.feature_size, space, hidden_size=16, layers=1))
    critic = Critic(m.feature_size, 16, 1)
    learner = ImaginationLearner(m, actor, critic, ImaginationSettings(horizon=4, entropy=0.0, actor_lr=1e-2))
    actor_before = flat_params(actor)
    critic_before = flat_params(critic)
    learner.update(start_states(m, action_size))
    assert all(p.grad is None for p in m.parameters())
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert not torch.equal(flat_params(actor), actor_before)
    assert not torch.equal(flat_params(critic), critic_before)


def test_imagination_in_a_dropout_m_dreams_in_its_variants() -> None:
    """The actor-critic imagines in Dropout's Dream Land too: the same weights with dropout
    give other imagined features than without (the masks apply)."""
    torch.manual_seed(0)
    plain, dropped = small_m("mdrnn", 2).eval(), small_m("mdrnn-dropout", 2).eval()
    dropped.load_state_dict(plain.state_dict())
    start = start_states(plain, 2, n=1)
    start = {k: v.expand(16, -1) for k, v in start.items()}
    actor = Actor(ActorConfig.for_space(plain.feature_size, gym.spaces.Box(-1, 1, (2,), np.float32),
                                        hidden_size=16, layers=1))
    feats = {}
    for name, m in (("plain", plain), ("dropped", dropped)):
        learner = ImaginationLearner(m, actor, Critic(m.feature_size, 16, 1),
                                     ImaginationSettings(horizon=5, temperature=1e-6))
        torch.manual_seed(1)
        feats[name] = learner.imagine(start).features
    assert (feats["plain"] - feats["dropped"]).abs().max() > 0.05


def test_reinforce_gradient_is_refused_for_continuous_actions() -> None:
    m = small_m("mdrnn", 2)
    actor = Actor(ActorConfig.for_space(m.feature_size, gym.spaces.Box(-1, 1, (2,)), hidden_size=8, layers=1))
    with pytest.raises(ValueError, match="REINFORCE"):
        ImaginationLearner(m, actor, Critic(m.feature_size, 8, 1), ImaginationSettings(reinforce=True))


# --- learning on worlds whose answer is known -----------------------------------------------

class Chain(nn.Module):
    """Cells 0..6, actions left / right; the right end gives +1 and ends the episode, the
    left end -1 and ends it; -0.01 per step. State and features: the one-hot cell."""

    N = 7
    z_size, action_size, feature_size = N, 2, N

    def __init__(self) -> None:
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))

    def features(self, state: dict[str, torch.Tensor]) -> torch.Tensor:
        return state["x"]

    def randomize(self, state, noise=None):
        return state

    def imagine(self, state, a, temperature=1.0, noise=None):
        cell = (state["x"].argmax(-1) + a.argmax(-1) * 2 - 1).clamp(0, self.N - 1)
        x = F.one_hot(cell, self.N).float()
        goal, hazard = (cell == self.N - 1).float(), (cell == 0).float()
        return {"x": x}, x, goal - hazard - 0.01, goal + hazard


class Reach(nn.Module):
    """A point on a line moved by a continuous action in [-1, 1]; the reward is minus its
    distance to the target at 0.8: differentiable, so the actor learns through M."""

    z_size, action_size, feature_size = 1, 1, 1

    def __init__(self) -> None:
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))

    def features(self, state):
        return state["x"]

    def randomize(self, state, noise=None):
        return state

    def imagine(self, state, a, temperature=1.0, noise=None):
        x = (state["x"] + 0.5 * a).clamp(-2, 2)
        return {"x": x}, x, -(x[:, 0] - 0.8).abs(), torch.zeros(len(x))


def test_reinforce_learns_to_walk_to_the_goal() -> None:
    torch.manual_seed(0)
    m = Chain()
    actor = Actor(ActorConfig(Chain.N, 2, True, hidden_size=32, layers=1))
    learner = ImaginationLearner(m, actor, Critic(Chain.N, 32, 1), ImaginationSettings(
        horizon=10, actor_lr=1e-3, critic_lr=1e-3, reinforce=True))
    inner = torch.eye(Chain.N)[1:-1]
    p_right = lambda: actor.net(inner).softmax(-1)[:, 1]  # noqa: E731
    with torch.no_grad():
        assert p_right().min() < 0.5
    for _ in range(150):
        learner.update({"x": F.one_hot(torch.randint(1, Chain.N - 1, (128,)), Chain.N).float()})
    with torch.no_grad():
        assert p_right().min() > 0.9


def test_gradients_through_m_learn_a_continuous_reach() -> None:
    torch.manual_seed(0)
    m = Reach()
    space = gym.spaces.Box(-1, 1, (1,), np.float32)
    actor = Actor(ActorConfig.for_space(1, space, hidden_size=32, layers=1))
    learner = ImaginationLearner(m, actor, Critic(1, 32, 1), ImaginationSettings(
        horizon=8, gamma=0.9, actor_lr=3e-3, critic_lr=3e-3, entropy=1e-4))

    def final_distance() -> float:
        x = torch.linspace(-1.5, 1.5, 31)[:, None]
        with torch.no_grad():
            for _ in range(6):
                x = m.imagine({"x": x}, actor.mode(x))[0]["x"]
        return float((x - 0.8).abs().mean())

    start = final_distance()
    for _ in range(200):
        learner.update({"x": torch.rand(128, 1) * 3 - 1.5})
    assert final_distance() < min(0.1, start / 5)


def test_actor_controller_acts_as_the_actor_with_its_flat_weights() -> None:
    torch.manual_seed(0)
    cfg = ActorConfig.for_space(5, gym.spaces.Box(np.array([-1, 0]), np.array([1, 2])), hidden_size=8, layers=2)
    actor = Actor(cfg)
    c = ActorController(cfg)
    f = torch.randn(10, 5)
    params = flat_params(actor)
    a = c.act(f, params.expand(10, -1))
    assert torch.equal(a, actor.mode(f))
    assert (a[:, 0].abs() <= 1).all() and (a[:, 1] >= 0).all() and (a[:, 1] <= 2).all()
    with pytest.raises(ValueError, match="rows of params differ"):
        c.act(f[:2], torch.stack([params, params + 1]))


# --- trainagent.py --method ac on GridWorld -----------------------------------------------

AC = ["--method", "ac", "--device", "cpu", "--max-workers", "0", "--batch-size", "8", "--seq-len", "16",
      "--units", "32", "--mlp-layers", "1", "--eval-episodes", "16", "--actor-lr", "3e-4", "--critic-lr", "3e-4"]


@pytest.fixture
def logdir(grid_world, tmp_path) -> Path:
    return Path(shutil.copytree(grid_world, tmp_path / "exp"))


def trainagent(logdir: Path, *args: str, check: bool = True):
    return run_script("trainagent.py", "--logdir", str(logdir), *AC, *args, check=check)


def metric_lines(logdir: Path, dynamics: str = "mdrnn") -> list[dict]:
    lines = (logdir / "agent" / dynamics / "ac" / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(ln).items() if k != "seconds"} for ln in lines]


@pytest.mark.parametrize("dynamics", ["mdrnn", "rssm", "tssm"])
def test_resume_gives_the_same_actor_as_no_interruption(logdir, tmp_path, dynamics) -> None:
    other = Path(shutil.copytree(logdir, tmp_path / "other"))
    trainagent(logdir, "--dynamics", dynamics, "--updates", "6", "--eval-every", "3")
    trainagent(other, "--dynamics", dynamics, "--updates", "3", "--eval-every", "3")
    out = trainagent(other, "--dynamics", dynamics, "--updates", "6", "--eval-every", "3")
    assert "resuming" in out.stdout
    a, b = (load_checkpoint(d / "agent" / dynamics / "ac" / "latest.pt") for d in (logdir, other))
    for part in ("actor", "critic", "target"):
        for k, v in a["learner"][part].items():
            assert torch.equal(v, b["learner"][part][k]), (part, k)
    assert a["loop"]["update"] == b["loop"]["update"] == 6
    assert metric_lines(logdir, dynamics) == metric_lines(other, dynamics)
    gifs = sorted((logdir / "agent" / dynamics / "ac" / "dreams").glob("*.gif"))
    assert [g.name for g in gifs] == ["update_000003.gif", "update_000006.gif"]
    frames = imageio.mimread(gifs[-1])
    assert frames[0].shape[:2] == (128, 4 * 128)


def test_test_controller_evaluates_the_actor_and_keeps_cmaes_results_apart(logdir) -> None:
    trainagent(logdir, "--updates", "2", "--eval-every", "2")
    best = load_checkpoint(logdir / "agent" / "mdrnn" / "ac" / "best.pt")
    out = run_script("test_controller.py", "--logdir", str(logdir), "--method", "ac", "--episodes", "20",
                     "--workers", "0", "--device", "cpu")
    assert "controller (update 2)" in out.stdout
    res = json.loads((logdir / "eval" / "mdrnn_ac.json").read_text())
    assert len(res["episodes"]) == 20 and not (logdir / "eval" / "mdrnn_cmaes.json").exists()
    assert best["controller"]["kind"] == "actor"


def test_ac_refuses_bad_flags_and_changed_settings(logdir) -> None:
    bad = trainagent(logdir, "--dream", check=False)
    assert bad.returncode == 2 and "always learns in the dream" in bad.stderr
    trainagent(logdir, "--updates", "2", "--eval-every", "2")
    changed = trainagent(logdir, "--updates", "4", "--horizon", "5", check=False)
    assert changed.returncode != 0 and "imagination" in changed.stderr


def test_a_new_m_continues_the_actor_critic_for_more_updates(logdir) -> None:
    """An online round: latest.pt made on another M continues (optimizers included) for
    --updates more, and best.pt is judged afresh in the new round."""
    trainagent(logdir, "--updates", "4", "--eval-every", "2")
    latest = logdir / "agent" / "mdrnn" / "ac" / "latest.pt"
    ckpt = load_checkpoint(latest)
    torch.save({**ckpt, "identity": {**ckpt["identity"], "dynamics_id": "an older M"}}, latest)
    out = trainagent(logdir, "--updates", "4", "--eval-every", "2")
    assert "a new round" in out.stdout
    after = load_checkpoint(latest)
    assert (after["loop"]["update"], after["loop"]["round"], after["loop"]["round_start"]) == (8, 1, 4)
    assert after["learner"]["actor_opt"]["state"][0]["step"] == 8  # Adam went on, it did not start over
    assert [ln["step"] for ln in metric_lines(logdir)] == [2, 4, 6, 8]
    assert load_checkpoint(logdir / "agent" / "mdrnn" / "ac" / "best.pt")["update"] in (6, 8)
