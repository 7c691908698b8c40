"""A process pool that never hangs silently.

Each worker builds its expensive state once (an env, later V, M and C) and then runs
tasks one at a time. The parent always knows which task each worker holds, so a worker
that raises is reported with its traceback, and one that dies or exceeds the timeout is
restarted and its task rerun (up to `retries` times) or reported with a clear error.
Each worker answers on its own pipe, written synchronously: a worker that dies can never
leave a shared queue's lock held, which would silently block every other worker's result.
`workers=0` runs everything inline in the calling process, which is handy for debugging.
`open_pool` picks this local backend or the Ray one (utils/ray_pool.py) behind one interface.
"""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.connection as mpc
import os
import queue
import signal
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from utils.cli import UserError
from utils.device import WORKER_ID

POLL_S = 0.2
PARENT_CHECK_S = 2.0  # an idle worker checks this often whether its parent still lives
STARTUP_TIMEOUT_S = 600.0  # building a worker's state (V, M, envs) may take this long before it counts as hung


class WorkerError(UserError):
    """A task failed, or a worker died or hung more often than `retries` allows."""


def _worker_main(
    init: Callable[..., Any],
    init_args: tuple,
    fn: Callable[[Any, Any], Any],
    tasks: mp.Queue,
    results: mpc.Connection,
    wid: int,
    parent: int,
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    os.environ[WORKER_ID] = str(wid)  # lets init pick a GPU (utils/device.py)
    try:
        state = init(*init_args)
    except BaseException:
        results.send(("error", wid, None, traceback.format_exc()))
        return
    results.send(("ready", wid, None, None))  # the task timeout starts now, not at spawn
    while True:
        try:
            item = tasks.get(timeout=PARENT_CHECK_S)
        except queue.Empty:
            if os.getppid() != parent:  # the parent was killed: no one will ever read our results
                return
            continue
        if item is None:
            return
        tid, task = item
        try:
            results.send(("done", wid, tid, fn(state, task)))
        except BaseException:
            results.send(("error", wid, tid, traceback.format_exc()))


def give_up_or_retry(failures: dict[int, int], wid: int, tid: int, task: Any, reason: str, retries: int) -> None:
    """Count a lost task; raise once it has failed more than `retries` times, else warn."""
    failures[tid] = failures.get(tid, 0) + 1
    if failures[tid] > retries:
        raise WorkerError(f"worker {wid} {reason} while running task {task!r} (tried {failures[tid]} times); giving up")
    print(f"warning: worker {wid} {reason} on task {task!r}; restarting it and retrying")


@dataclass
class _Slot:
    proc: mp.process.BaseProcess
    tasks: mp.Queue
    results: mpc.Connection  # the parent's reading end of this worker's pipe
    job: tuple[int, Any] | None = None
    started: float = field(default_factory=time.monotonic)  # since start-up, then since the task arrived
    ready: bool = False


class WorkerPool:
    """Run `fn(state, task)` over tasks in `workers` spawned processes, `state = init(*init_args)`.

    init and fn must be importable module-level functions (spawn pickles them by name).
    timeout: seconds one task may take before its worker counts as hung (None: no limit).
    """

    def __init__(
        self,
        workers: int,
        init: Callable[..., Any],
        fn: Callable[[Any, Any], Any],
        init_args: tuple = (),
        timeout: float | None = None,
        retries: int = 1,
    ) -> None:
        self.n = workers
        self.init, self.fn, self.init_args = init, fn, init_args
        self.timeout, self.retries = timeout, retries
        self.ctx = mp.get_context("spawn")
        self.slots: list[_Slot] = [self._start(w) for w in range(workers)]
        self._inline_state: Any = init(*init_args) if workers == 0 else None

    def _start(self, wid: int) -> _Slot:
        tasks: mp.Queue = self.ctx.Queue()
        results, send = self.ctx.Pipe(duplex=False)
        proc = self.ctx.Process(
            target=_worker_main,
            args=(self.init, self.init_args, self.fn, tasks, send, wid, os.getpid()),
            daemon=True,
        )
        proc.start()
        send.close()  # the worker holds the only writing end
        return _Slot(proc, tasks, results)

    def _assign(self, wid: int, job: tuple[int, Any]) -> None:
        slot = self.slots[wid]
        slot.job = job
        if slot.ready:
            slot.started = time.monotonic()
        slot.tasks.put(job)

    @staticmethod
    def _stop(slot: _Slot, wait: float) -> None:
        """Join, or kill after `wait` s; then drop what the worker never read from its queue,
        which would otherwise block this process's exit on the queue's feeder thread."""
        slot.proc.join(wait)
        if slot.proc.is_alive():
            slot.proc.kill()
            slot.proc.join()
        slot.tasks.cancel_join_thread()
        slot.tasks.close()
        slot.results.close()

    def _restart(self, wid: int) -> None:
        self._stop(self.slots[wid], 0)
        self.slots[wid] = self._start(wid)

    def imap_unordered(self, tasks: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
        """Yield (task, result) pairs as they finish."""
        if self.n == 0:
            for task in tasks:
                yield task, self.fn(self._inline_state, task)
            return
        pending: deque[tuple[int, Any]] = deque(enumerate(tasks))
        failures: dict[int, int] = {}
        busy = 0
        while pending or busy:
            for wid, slot in enumerate(self.slots):
                if slot.job is None and pending:
                    self._assign(wid, pending.popleft())
                    busy += 1
            message = self._receive()
            if message is None:
                for wid, slot in enumerate(self.slots):
                    if slot.job is not None:
                        self._check_health(wid, slot, pending, failures)
                busy = sum(s.job is not None for s in self.slots)
                continue
            kind, wid, _, payload = message
            slot = self.slots[wid]
            if kind == "ready":
                slot.ready, slot.started = True, time.monotonic()
                continue
            if kind == "error":
                where = f"task {slot.job[1]!r}" if slot.job else "worker start-up"
                raise WorkerError(f"worker {wid} failed in {where}:\n{payload}")
            job, slot.job = slot.job, None
            busy -= 1
            yield job[1], payload

    def _receive(self) -> tuple | None:
        """The next message of any worker, or None after POLL_S without one. A dead
        worker's pipe reads as closed: the health check reruns its task, and an idle
        one is restarted here, or its closed pipe would wake every wait at once."""
        ready = mpc.wait([s.results for s in self.slots], timeout=POLL_S)
        for wid, slot in enumerate(self.slots):
            if slot.results not in ready:
                continue
            try:
                return slot.results.recv()
            except (EOFError, OSError):
                if slot.job is None:
                    self._restart(wid)
        return None

    def _check_health(
        self, wid: int, slot: _Slot, pending: deque, failures: dict[int, int]
    ) -> None:
        if slot.proc.is_alive():
            limit = self.timeout if slot.ready else max(STARTUP_TIMEOUT_S, self.timeout or 0)
            if limit is None or time.monotonic() - slot.started <= limit:
                return
            reason = f"hung for more than {limit:g} s" + ("" if slot.ready else " while starting")
        else:
            reason = f"died with exit code {slot.proc.exitcode}"
        tid, task = slot.job
        give_up_or_retry(failures, wid, tid, task, reason, self.retries)
        slot.job = None
        self._restart(wid)
        pending.appendleft((tid, task))

    def close(self) -> None:
        """Stop workers: politely when idle, by force when busy or stuck."""
        for slot in self.slots:
            if slot.proc.is_alive() and slot.job is None:
                slot.tasks.put(None)
        deadline = time.monotonic() + 5
        for slot in self.slots:
            self._stop(slot, max(0.0, deadline - time.monotonic()) if slot.job is None else 0)
        self.slots = []

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Pool(Protocol):
    """What the stages use: results as they finish, then close (WorkerPool or RayPool)."""

    def imap_unordered(self, tasks: Iterable[Any]) -> Iterator[tuple[Any, Any]]: ...
    def close(self) -> None: ...
    def __enter__(self) -> Pool: ...
    def __exit__(self, *exc: object) -> None: ...


def open_pool(
    workers: int, init: Callable[..., Any], fn: Callable[[Any, Any], Any], init_args: tuple = (),
    timeout: float | None = None, retries: int = 1, ray: str | None = None, gpus: bool = False,
) -> Pool:
    """Local spawned processes by default; Ray actors when `ray` names a cluster ('auto' or an
    address). Both give the same results for the same tasks. gpus: Ray actors get a share of
    the cluster's GPUs (local workers pick theirs with utils.device.worker_device)."""
    if ray is None:
        return WorkerPool(workers, init, fn, init_args, timeout, retries)
    from utils.ray_pool import RayPool  # Ray is optional: imported only when asked for

    return RayPool(ray, workers, init, fn, init_args, timeout, retries, gpus)
