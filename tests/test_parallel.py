"""WorkerPool: results, tracebacks, dead and hung workers, retries."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT
from tests.workers_for_tests import add, init_offset, init_slowly, misbehave
from utils.parallel import WorkerError, WorkerPool


@pytest.mark.parametrize("workers", [0, 2])
def test_all_results_arrive_once(workers: int) -> None:
    with WorkerPool(workers, init_offset, add, (100,)) as pool:
        out = dict(pool.imap_unordered(range(20)))
    assert out == {i: 100 + i for i in range(20)}


def test_exception_in_task_reports_worker_traceback() -> None:
    with WorkerPool(2, init_offset, misbehave, (0,)) as pool:
        with pytest.raises(WorkerError) as e:
            list(pool.imap_unordered(["ok", "raise", "ok"]))
    assert "ValueError: task asked to fail" in str(e.value)
    assert "misbehave" in str(e.value)  # the traceback, not just the message


def test_dead_worker_is_retried_then_succeeds(tmp_path) -> None:
    marker = tmp_path / "died"
    tasks = ["a", f"die-once:{marker}", "b"]
    with WorkerPool(1, init_offset, misbehave, (0,), retries=1) as pool:
        out = sorted(r for _, r in pool.imap_unordered(tasks))
    assert marker.exists()
    assert out == sorted(tasks)


def test_worker_that_always_dies_gives_clear_error() -> None:
    with WorkerPool(2, init_offset, misbehave, (0,), retries=1) as pool:
        with pytest.raises(WorkerError, match=r"died with exit code 7 .*'die'.*tried 2 times"):
            list(pool.imap_unordered(["ok", "die"]))


def test_hung_worker_times_out() -> None:
    with WorkerPool(1, init_offset, misbehave, (0,), timeout=1.0, retries=0) as pool:
        with pytest.raises(WorkerError, match=r"hung for more than 1 s"):
            list(pool.imap_unordered(["hang"]))


def test_slow_start_up_does_not_count_as_hung() -> None:
    """The timeout is for a task; loading V and M on a busy machine may take longer."""
    with WorkerPool(1, init_slowly, misbehave, (3.0,), timeout=1.0, retries=0) as pool:
        assert [r for _, r in pool.imap_unordered(["ok", "ok"])] == ["ok", "ok"]


def test_run_exits_after_a_worker_dies_holding_an_unread_task() -> None:
    """A task larger than a pipe's buffer sent to a worker that dies before reading it must not
    block the parent's exit (it did: the queue's feeder thread was joined at exit)."""
    code = ("import numpy as np\nfrom tests.workers_for_tests import add, die_in_init\n"
            "from utils.parallel import WorkerError, WorkerPool\n"
            "try:\n    with WorkerPool(2, die_in_init, add, (5,), retries=1) as pool:\n"
            "        list(pool.imap_unordered([np.zeros(10**6) for _ in range(4)]))\n"
            "except WorkerError as e:\n    print(e)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "died with exit code 5" in proc.stdout and "giving up" in proc.stdout


def test_workers_exit_when_their_parent_is_killed() -> None:
    """A run killed with SIGKILL leaves no orphaned workers behind."""
    code = ("import time\nfrom tests.workers_for_tests import add, init_offset\nfrom utils.parallel import WorkerPool\n"
            "pool = WorkerPool(2, init_offset, add, (0,))\nlist(pool.imap_unordered([1]))\n"
            "print(' '.join(str(s.proc.pid) for s in pool.slots), flush=True)\ntime.sleep(600)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    pids = [int(p) for p in parent.stdout.readline().split()]
    assert len(pids) == 2 and all(_alive(p) for p in pids)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 20
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(p) for p in pids)


def _alive(pid: int) -> bool:
    """Running, and not a zombie waiting to be reaped by init."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_a_worker_that_dies_idle_is_replaced() -> None:
    """No task is lost: one handed to it before its death was seen is rerun on a new worker."""
    with WorkerPool(2, init_offset, misbehave, (0,), retries=1) as pool:
        assert [r for _, r in pool.imap_unordered(["a"])] == ["a"]
        idle = pool.slots[1].proc
        idle.kill()
        idle.join()
        assert sorted(r for _, r in pool.imap_unordered(["b", "c", "d"])) == ["b", "c", "d"]
        assert pool.slots[1].proc is not idle and pool.slots[1].proc.is_alive()
