"""The dataset encoded once by V (DESIGN section 5): M never runs frames through V.

<logdir>/latents/ holds, for every frame, V's latent statistics ([mu, logvar], or logits
for discrete latents) with the episode's actions (one-hot for discrete spaces), rewards,
terminals and truncations, as .npy files read through memory maps. meta.json names the
V checkpoint and dataset files they came from; a different V or dataset rebuilds them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from data.dataset import DatasetError, fingerprint, read_meta, relative_names
from data.rollouts import load_rollout
from models.vae import VAE, frames_to_tensor
from utils.device import to_device
from utils.io import atomic_open, write_json

ARRAYS = ("stats", "actions", "rewards", "terminals", "truncations")


@dataclass
class Latents:
    stats: np.ndarray  # (N, S) float32
    actions: np.ndarray  # (N, A) float32
    rewards: np.ndarray  # (N,) float32
    terminals: np.ndarray  # (N,) bool
    truncations: np.ndarray  # (N,) bool
    offsets: np.ndarray  # (E + 1,) episode boundaries
    names: list[str]

    def episode(self, e: int) -> slice:
        return slice(int(self.offsets[e]), int(self.offsets[e + 1]))


def action_vectors(actions: np.ndarray, n_discrete: int | None) -> np.ndarray:
    """Actions as M consumes them: one-hot rows for discrete spaces, float32 otherwise."""
    if n_discrete is not None:
        return np.eye(n_discrete, dtype=np.float32)[actions]
    return actions.astype(np.float32).reshape(len(actions), -1)


def discrete_actions(dataset: Path, actions: np.ndarray) -> int | None:
    """Number of discrete actions (None for continuous): from dataset.json, else from the
    largest action seen (datasets written by other tools have no dataset.json)."""
    space = (read_meta(dataset) or {}).get("action_space")
    if space:
        return space["n"] if space["type"] == "discrete" else None
    return None if actions.ndim == 2 else int(actions.max()) + 1


def _open(folder: Path, meta: dict) -> Latents:
    arrays = {k: np.load(folder / f"{k}.npy", mmap_mode="r") for k in ARRAYS}
    return Latents(**arrays, offsets=np.asarray(meta["offsets"]), names=[f[0] for f in meta["files"]])


def cached_dataset(logdir: Path) -> Path:
    """The dataset whose latents <logdir>/latents/ holds: the data M was trained on. Every
    stage after M reads its env, actions and action repeat there, so it must still exist."""
    meta = Path(logdir) / "latents" / "meta.json"
    if not meta.exists():
        raise DatasetError(f"no {meta}: train M first (python traindynamics.py --logdir {logdir} ...)")
    dataset = Path(json.loads(meta.read_text())["dataset"])
    if not dataset.is_dir():
        raise DatasetError(f"M in {logdir} learned from {dataset}, which no longer exists: move it back, or "
                           "regenerate it there with the same generation_script.py command")
    return dataset


@torch.no_grad()
def latent_cache(
    logdir: Path, dataset: Path, files: list[Path], vae: VAE, vae_id: str, device: torch.device,
    batch: int = 256,
) -> Latents:
    """Latents of every episode under the current V. Episodes already cached under this V
    are copied from the cache; only the others (a round's new episodes) go through V."""
    folder = Path(logdir) / "latents"
    fp = [[name, *f[1:]] for name, f in zip(relative_names(files), fingerprint(files), strict=True)]
    key = {"vae": vae_id, "dataset": str(Path(dataset).resolve()), "files": fp}
    meta_path = folder / "meta.json"
    old: Latents | None = None
    cached: dict[tuple, int] = {}
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if {k: meta[k] for k in key} == key:
            return _open(folder, meta)
        if meta["vae"] == vae_id and meta["dataset"] == key["dataset"]:
            old = _open(folder, meta)
            cached = {tuple(f): i for i, f in enumerate(meta["files"])}
    todo = [i for i, f in enumerate(fp) if tuple(f) not in cached]
    if cached:
        print(f"latents: {len(fp) - len(todo)} episodes cached, encoding {len(todo)} new ones with V")
    elif meta_path.exists():
        print("V or the dataset changed since the latents were cached: encoding again")
    folder.mkdir(parents=True, exist_ok=True)
    vae.eval()
    encoded = {i: _encode(files[i], vae, device, batch) for i in tqdm(todo, desc="encoding frames with V",
                                                                        unit="ep", leave=False)}
    n_discrete = meta["n_discrete"] if cached else discrete_actions(
        dataset, np.concatenate([e["actions"] for e in encoded.values()]))
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ARRAYS}
    for i, f in enumerate(fp):
        if i in encoded:
            e = encoded[i]
            e["actions"] = action_vectors(e["actions"], n_discrete)
        else:
            rows = old.episode(cached[tuple(f)])
            e = {k: getattr(old, k)[rows] for k in ARRAYS}
        for k in ARRAYS:
            parts[k].append(e[k])
    arrays = {k: np.concatenate(chunks) for k, chunks in parts.items()}
    lengths = [len(chunk) for chunk in parts["rewards"]]
    meta_path.unlink(missing_ok=True)  # invalid until every array below is complete
    for k, array in arrays.items():
        with atomic_open(folder / f"{k}.npy") as f:
            np.save(f, array)
    meta = {**key, "offsets": np.concatenate([[0], np.cumsum(lengths)]).tolist(), "n_discrete": n_discrete}
    write_json(meta_path, meta)
    return _open(folder, meta)


def _encode(path: Path, vae: VAE, device: torch.device, batch: int) -> dict[str, np.ndarray]:
    """One episode's V statistics with its raw actions, rewards and ends."""
    r = load_rollout(path)
    obs = torch.from_numpy(r["observations"])
    stats = [vae.encode(frames_to_tensor(to_device(obs[i : i + batch], device))).float().cpu().numpy()
             for i in range(0, len(obs), batch)]
    return {"stats": np.concatenate(stats), **{k: r[k] for k in ("actions", "rewards", "terminals", "truncations")}}
