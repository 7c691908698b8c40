"""The Ray backend: the same results as the local process pool, lost actors replaced, errors shown."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from agent.evaluate import AgentSpec, RealEvaluator, load_world
from data.dataset import list_rollouts
from data.rollouts import load_rollout
from models.controller import ControllerConfig
from tests.conftest import ROOT, run_script
from tests.workers_for_tests import add, init_offset, misbehave
from utils.parallel import WorkerError

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -r requirements-distributed.txt)")
from utils.ray_pool import RayPool, connect  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def local_cluster():
    """One private Ray instance for this module's in-process pools, started as --ray auto does."""
    connect("auto")
    yield
    ray.shutdown()


def test_every_result_arrives_once() -> None:
    with RayPool("auto", 2, init_offset, add, (100,)) as pool:
        out = dict(pool.imap_unordered(range(12)))
    assert out == {i: 100 + i for i in range(12)}


def test_an_actor_killed_mid_task_is_replaced_and_the_run_completes(tmp_path) -> None:
    marker = tmp_path / "died"
    tasks = ["a", f"die-once:{marker}", "b", "c"]
    with RayPool("auto", 2, init_offset, misbehave, (0,), retries=1) as pool:
        out = sorted(r for _, r in pool.imap_unordered(tasks))
    assert marker.exists()  # the actor really died once
    assert out == sorted(tasks)


def test_an_actor_that_always_dies_gives_up_with_a_clear_error() -> None:
    with RayPool("auto", 1, init_offset, misbehave, (0,), retries=1) as pool:
        with pytest.raises(WorkerError, match=r"died while running task 'die' \(tried 2 times\); giving up"):
            list(pool.imap_unordered(["ok", "die"]))


def test_an_exception_shows_the_actors_traceback() -> None:
    with RayPool("auto", 2, init_offset, misbehave, (0,)) as pool:
        with pytest.raises(WorkerError) as e:
            list(pool.imap_unordered(["ok", "raise"]))
    assert "ValueError: task asked to fail" in str(e.value) and "misbehave" in str(e.value)


def test_a_hung_actor_times_out() -> None:
    with RayPool("auto", 1, init_offset, misbehave, (0,), timeout=1.0, retries=0) as pool:
        with pytest.raises(WorkerError, match=r"hung for more than 1 s"):
            list(pool.imap_unordered(["hang"]))


def test_real_env_episodes_are_identical_on_both_backends(grid_world) -> None:
    """V, M and a random linear C in 2 local processes and on 2 Ray actors, same seeds."""
    _, m, _ = load_world(grid_world, "mdrnn", torch.device("cpu"))
    cfg = ControllerConfig(m.feature_size, 4, True, sample=True)
    spec = AgentSpec(str(grid_world), "mdrnn", "GridWorld-v0", cfg.to_dict())
    params = np.random.default_rng(0).normal(size=(10, cfg.n_params)).astype(np.float32)
    seeds = list(range(100, 110))
    results = []
    for backend in (None, "auto"):
        evaluator = RealEvaluator(spec, 2, 300.0, 20, envs_per_worker=3, ray=backend)
        try:
            results.append(evaluator(params, seeds))
        finally:
            evaluator.close()
    (r_local, ep_local), (r_ray, ep_ray) = results
    assert np.array_equal(r_local, r_ray)
    assert [e.steps for e in ep_local] == [e.steps for e in ep_ray]
    assert len({e.steps for e in ep_local}) > 1  # the episodes really differ from one another


def test_generation_writes_identical_rollouts_on_both_backends(tmp_path) -> None:
    """generation_script.py --ray auto starts its own Ray instance; files match the local run's."""
    common = ["--rollouts", "6", "--threads", "2", "--seed", "3"]
    run_script("generation_script.py", "--rootdir", str(tmp_path / "local"), *common)
    proc = run_script("generation_script.py", "--rootdir", str(tmp_path / "ray"), *common, "--ray", "auto")
    assert "Ray actor(s)" in proc.stdout
    local, remote = list_rollouts(tmp_path / "local"), list_rollouts(tmp_path / "ray")
    assert [p.name for p in local] == [p.name for p in remote] and len(local) == 6
    for a, b in zip(local, remote, strict=True):
        ra, rb = load_rollout(a), load_rollout(b)
        assert all(np.array_equal(ra[k], rb[k]) for k in ra)


def test_missing_ray_is_a_clear_error() -> None:
    code = ("import sys\nsys.modules['ray'] = None\nfrom utils.parallel import open_pool\n"
            "from tests.workers_for_tests import add, init_offset\n"
            "try:\n    open_pool(1, init_offset, add, (0,), ray='auto')\nexcept Exception as e:\n    print(e)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "pip install -r requirements-distributed.txt" in proc.stdout
