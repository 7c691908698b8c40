"""pycma's search state through a weights-only checkpoint: the resumed search asks for
exactly the candidates the uninterrupted one asks for."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from agent.es_state import es_state, new_strategy, restore_es
from utils.checkpoint import rng_state, set_rng_state


def fitness(x: np.ndarray) -> float:
    return float(np.sum((x - 0.3) ** 2) + 0.1 * np.abs(x).sum())


def run(es, generations: range, asked: list) -> None:
    for _ in generations:
        x = es.ask()
        asked.append(np.array(x))
        es.tell(x, [fitness(v) for v in x])


@pytest.mark.parametrize(("n", "pop", "saved_at"), [(30, 8, 15), (867, 16, 30)])  # 867: CarRacing's linear C
def test_restored_search_equals_the_uninterrupted_one_bit_for_bit(n: int, pop: int, saved_at: int) -> None:
    """At 867 parameters pycma's Fortran-ordered eigenvectors must come back Fortran-ordered:
    a C-ordered copy rounds differently and the search drifts from the third generation on."""
    whole: list = []
    run(new_strategy(n, 0.1, pop, seed=7), range(saved_at + 10), whole)
    es, resumed = new_strategy(n, 0.1, pop, seed=7), []
    run(es, range(saved_at), resumed)
    buf = io.BytesIO()
    torch.save({"es": es_state(es), "rng": rng_state()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)  # what latest.pt allows: tensors and plain values only
    np.random.seed(999)  # whatever ran in between
    fresh = new_strategy(n, 0.1, pop, seed=7)
    restore_es(fresh, saved["es"])
    set_rng_state(saved["rng"])
    run(fresh, range(saved_at, saved_at + 10), resumed)
    assert all(np.array_equal(a, b) for a, b in zip(whole, resumed, strict=True))
    assert fresh.countiter == saved_at + 10 and fresh.sigma != 0.1  # it really moved


def test_a_strategy_without_the_state_asks_for_other_candidates() -> None:
    """The check above can fail: a fresh strategy given only the RNG does not continue the search."""
    es = new_strategy(30, 0.1, 8, seed=7)
    run(es, range(15), [])
    state = rng_state()
    nxt = np.array(es.ask())
    fresh = new_strategy(30, 0.1, 8, seed=7)
    set_rng_state(state)
    assert not np.array_equal(np.array(fresh.ask()), nxt)
