"""WorkerPool's contract on a Ray cluster: one Ray actor per worker, each holding init's state.

Imported only when a script gets --ray, so Ray stays an optional dependency. Every actor
builds its state once (an env, V, M and C), then runs fn(state, task) calls. A task whose
actor dies (a lost node, an OOM kill) or exceeds the timeout is rerun on a fresh actor, up
to `retries` times; an exception inside fn is raised here with the actor's traceback.
Results depend only on the tasks, so a run gives the same rollouts on Ray as on the local
backend.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from utils.parallel import STARTUP_TIMEOUT_S, WorkerError, give_up_or_retry

POLL_S = 0.2
ROOT = Path(__file__).resolve().parents[1]


def import_ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise WorkerError("--ray needs Ray: pip install -r requirements-distributed.txt") from e
    return ray


def connect(address: str) -> Any:
    """Join the cluster at `address`; 'auto' joins a running local cluster (`ray start`, or
    RAY_ADDRESS) and otherwise starts a private one on this machine."""
    ray = import_ray()
    if not ray.is_initialized():
        # every package of the project (test envs included) is shipped to the nodes: no shared checkout needed
        packages = sorted(str(p) for p in ROOT.iterdir() if (p / "__init__.py").exists())
        runtime_env = {"py_modules": packages}
        try:
            ray.init(address=None if address == "auto" else address, runtime_env=runtime_env,
                     include_dashboard=False, logging_level="warning", log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise WorkerError(f"--ray {address}: cannot reach the Ray cluster ({e})") from e
    return ray


class _Actor:
    """The remote side: state = init(*init_args), then fn(state, task) per call."""

    def __init__(self, init: Callable[..., Any], init_args: tuple, fn: Callable[[Any, Any], Any]) -> None:
        self.state, self.fn = init(*init_args), fn

    def ready(self) -> bool:
        return True

    def run(self, task: Any) -> Any:
        return self.fn(self.state, task)


class RayPool:
    """Run fn(state, task) over tasks on `workers` Ray actors, 1 CPU each; with `gpus`, the
    cluster's GPUs are shared out evenly among them (Ray sets each actor's CUDA_VISIBLE_DEVICES)."""

    def __init__(
        self, address: str, workers: int, init: Callable[..., Any], fn: Callable[[Any, Any], Any],
        init_args: tuple = (), timeout: float | None = None, retries: int = 1, gpus: bool = False,
    ) -> None:
        if workers < 1:
            raise WorkerError("--ray needs at least one worker")
        self.ray = connect(address)
        resources = self.ray.cluster_resources()
        cpus = int(resources.get("CPU", 0))
        if workers > cpus:  # the extra actors would wait for a CPU until the start-up limit
            print(f"warning: {workers} Ray workers asked for, but the cluster has {cpus} CPUs: using {cpus}")
            workers = max(1, cpus)
        self.timeout, self.retries = timeout, retries
        share = 0.0
        if gpus:
            total = resources.get("GPU", 0)
            if not total:
                raise WorkerError("--device cuda with --ray: the Ray cluster has no GPUs")
            share = min(1.0, total / workers)
        self.remote = self.ray.remote(num_cpus=1, num_gpus=share, max_restarts=0)(_Actor)
        self.args = (init, self.ray.put(init_args), fn)
        self.actors: list[Any] = [self.remote.remote(*self.args) for _ in range(workers)]
        for wid in range(workers):
            self._wait_ready(wid)

    def _wait_ready(self, wid: int) -> None:
        """Start-up (loading V and M) has its own generous limit; a failure shows init's traceback."""
        try:
            self.ray.get(self.actors[wid].ready.remote(), timeout=STARTUP_TIMEOUT_S)
        except self.ray.exceptions.GetTimeoutError as e:
            raise WorkerError(f"Ray worker {wid} took more than {STARTUP_TIMEOUT_S:g} s to start") from e
        except self.ray.exceptions.RayError as e:
            raise WorkerError(f"Ray worker {wid} failed in worker start-up:\n{e}") from e

    def _replace(self, wid: int) -> None:
        self.ray.kill(self.actors[wid], no_restart=True)
        self.actors[wid] = self.remote.remote(*self.args)
        self._wait_ready(wid)

    def imap_unordered(self, tasks: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
        """Yield (task, result) pairs as they finish."""
        pending: deque[tuple[int, Any]] = deque(enumerate(tasks))
        running: dict[Any, tuple[int, int, Any, float]] = {}  # ref -> (worker, task id, task, start)
        failures: dict[int, int] = {}
        idle = deque(range(len(self.actors)))
        while pending or running:
            while idle and pending:
                wid = idle.popleft()
                tid, task = pending.popleft()
                running[self.actors[wid].run.remote(task)] = (wid, tid, task, time.monotonic())
            done, _ = self.ray.wait(list(running), num_returns=1, timeout=POLL_S)
            for ref in done:
                wid, tid, task, _ = running.pop(ref)
                try:
                    result = self.ray.get(ref)
                except self.ray.exceptions.RayActorError:
                    give_up_or_retry(failures, wid, tid, task, "died", self.retries)
                    self._replace(wid)
                    pending.appendleft((tid, task))
                except self.ray.exceptions.RayTaskError as e:
                    raise WorkerError(f"Ray worker {wid} failed in task {task!r}:\n{e}") from e
                else:
                    yield task, result
                idle.append(wid)
            for ref, (wid, tid, task, start) in list(running.items()):
                if self.timeout is not None and time.monotonic() - start > self.timeout:
                    del running[ref]
                    give_up_or_retry(failures, wid, tid, task, f"hung for more than {self.timeout:g} s",
                                     self.retries)
                    self._replace(wid)
                    pending.appendleft((tid, task))
                    idle.append(wid)

    def close(self) -> None:
        """Kill this pool's actors; the cluster (and a private local one) lives on until exit."""
        for actor in self.actors:
            self.ray.kill(actor, no_restart=True)
        self.actors = []

    def __enter__(self) -> RayPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
