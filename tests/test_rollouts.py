"""Rollout file format: round trip, compatibility, damage detection, atomic writes."""

from __future__ import annotations

import numpy as np
import pytest

from data.rollouts import RolloutError, load_rollout, save_rollout


def make_rollout(T: int = 7, discrete: bool = True, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    actions = rng.integers(0, 4, T) if discrete else rng.uniform(-1, 1, (T, 3)).astype(np.float32)
    terminals = np.zeros(T, bool)
    terminals[-1] = True
    return {
        "observations": rng.integers(0, 256, (T, 64, 64, 3), dtype=np.uint8),
        "actions": actions,
        "rewards": rng.normal(size=T).astype(np.float32),
        "terminals": terminals,
        "truncations": np.zeros(T, bool),
    }


@pytest.mark.parametrize("discrete", [True, False])
def test_round_trip_keeps_values_and_dtypes(tmp_path, discrete: bool) -> None:
    r = make_rollout(discrete=discrete)
    save_rollout(tmp_path / "rollout_000000.npz", r)
    back = load_rollout(tmp_path / "rollout_000000.npz")
    assert set(back) == set(r)
    for k in r:
        np.testing.assert_array_equal(back[k], r[k])
    assert back["actions"].dtype == (np.int64 if discrete else np.float32)
    assert back["observations"].dtype == np.uint8 and back["terminals"].dtype == bool


def test_files_without_truncations_load_as_never_truncated(tmp_path) -> None:
    """Datasets written by other World Models implementations have no truncations key."""
    r = make_rollout()
    del r["truncations"]
    np.savez_compressed(tmp_path / "old.npz", **r)
    back = load_rollout(tmp_path / "old.npz")
    assert not back["truncations"].any() and len(back["truncations"]) == 7


def test_truncated_file_is_named(tmp_path) -> None:
    path = tmp_path / "rollout_000003.npz"
    save_rollout(path, make_rollout(T=50))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(RolloutError, match="rollout_000003.npz.*corrupt or truncated"):
        load_rollout(path)


def test_flipped_bytes_are_detected(tmp_path) -> None:
    path = tmp_path / "rollout_000004.npz"
    save_rollout(path, make_rollout(T=50))
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(64)
    path.write_bytes(bytes(data))
    with pytest.raises(RolloutError, match="rollout_000004.npz"):
        load_rollout(path)


def test_missing_key_and_length_mismatch_are_named(tmp_path) -> None:
    r = make_rollout()
    np.savez_compressed(tmp_path / "a.npz", **{k: v for k, v in r.items() if k != "rewards"})
    with pytest.raises(RolloutError, match=r"a.npz: missing keys \['rewards'\]"):
        load_rollout(tmp_path / "a.npz")
    r["rewards"] = r["rewards"][:-1]
    np.savez_compressed(tmp_path / "b.npz", **r)
    with pytest.raises(RolloutError, match="b.npz: rewards has 6 steps"):
        load_rollout(tmp_path / "b.npz")


def test_failed_write_leaves_nothing(tmp_path, monkeypatch) -> None:
    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez_compressed", boom)
    with pytest.raises(OSError, match="disk full"):
        save_rollout(tmp_path / "rollout_000000.npz", make_rollout())
    assert list(tmp_path.iterdir()) == []
