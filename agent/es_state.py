"""pycma's search state as tensors and plain values, so latest.pt never needs unpickling.

pycma keeps its state in attributes of a tree of its own objects (the strategy, its
sampler, step-size adaptation, fitness history, ...). `es_state` walks that tree and keeps
what is data: numbers, strings, arrays and lists of them. `restore_es` writes those
values back into a fresh strategy built with the same settings: the parts that are code
(options, callbacks, loggers) come from the constructor, never from the file.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

with warnings.catch_warnings():  # pycma says at import that cma.plot() needs matplotlib: we never plot
    warnings.filterwarnings("ignore", "Could not import matplotlib", UserWarning)
    import cma
    from cma.utilities.utils import ElapsedWCTime

# rebuilt from the constructor's arguments, or bookkeeping that does not steer the search
_SKIP = {"logger", "opts", "inopts", "inputargs", "timer", "_tell2_args", "_stopdict"}
_PLAIN = (bool, int, float, str, type(None))
_SCALAR = "__numpy_scalar__"


def _encode(value: Any) -> Any:
    """A checkpointable copy of value, or None when it is not data (a function, a cache)."""
    if isinstance(value, np.generic):  # before plain types (np.float64 is a float): keep its numpy type
        return {_SCALAR: torch.from_numpy(np.asarray(value).reshape(1))}
    if isinstance(value, _PLAIN):
        return {"v": value}
    if isinstance(value, np.ndarray) and value.dtype != object:
        # the memory order too: pycma's eigenvectors are Fortran-ordered, and products with a
        # C-ordered copy round differently (a resumed search would drift from the original)
        fortran = value.flags.f_contiguous and not value.flags.c_contiguous
        return {"a": torch.from_numpy(np.ascontiguousarray(value)), "fortran": fortran}
    if isinstance(value, list | tuple) and not hasattr(value, "__dict__"):
        items = [_encode(v) for v in value]
        return None if any(i is None for i in items) else {"l": items}
    if hasattr(value, "__dict__") and type(value).__module__.startswith("cma"):
        return {"o": _state(value)}
    return None


def _decode(enc: dict[str, Any], current: Any) -> Any:
    if "v" in enc:
        return enc["v"]
    if _SCALAR in enc:
        return enc[_SCALAR].numpy()[0]
    if "a" in enc:
        array = enc["a"].numpy()
        return np.asfortranarray(array) if enc["fortran"] else array.copy()
    items = [_decode(e, None) for e in enc["l"]]
    return tuple(items) if isinstance(current, tuple) else items


def new_strategy(
    n_params: int, sigma: float, popsize: int, seed: int, x0: np.ndarray | None = None,
) -> cma.CMAEvolutionStrategy:
    """pycma's strategy around x0 (zeros by default); the one place a search is built."""
    x0 = np.zeros(n_params) if x0 is None else x0
    return cma.CMAEvolutionStrategy(x0, sigma, {"popsize": popsize, "seed": seed, "verbose": -9})


def es_state(es: Any) -> dict[str, Any]:
    """The strategy's state; its B, C and D are its sampler's arrays, saved there once."""
    return _state(es, skip=frozenset({"B", "C", "D"}))


def _state(obj: Any, skip: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Every data attribute of a pycma object, recursively, as tensors and plain values."""
    out: dict[str, Any] = {}
    for name, value in vars(obj).items():
        if name in _SKIP or name in skip or (isinstance(value, dict) and not hasattr(value, "__dict__")):
            continue  # plain dicts in pycma are caches keyed by tuples or solutions
        enc = _encode(value)
        if enc is not None:
            out[name] = enc
    return out


def restore_es(es: Any, state: dict[str, Any]) -> None:
    """Write a saved es_state back into a freshly built CMAEvolutionStrategy of the same settings."""
    _restore(es, state)
    es.B, es.C, es.D = es.sm.B, es.sm.C, es.sm.D  # one array each, shared as pycma shares them
    if es.countiter > 0:  # pycma starts its wall clock at the first ask and expects it afterwards
        es.timer = ElapsedWCTime()


def _restore(obj: Any, state: dict[str, Any]) -> None:
    for name, enc in state.items():
        current = getattr(obj, name, None)
        if "o" in enc:
            if current is None:
                raise ValueError(f"the saved CMA-ES state has a part '{name}' this pycma does not build")
            _restore(current, enc["o"])
        else:
            setattr(obj, name, _decode(enc, current))
