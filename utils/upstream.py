"""Loading the upstream stages' best.pt, with the checks DESIGN section 5 asks for:
a missing stage names the command that makes it; a changed upstream is refused."""

from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch

from models.mdrnn import MDRNN, MDRNNConfig
from models.rssm import RSSM, RSSMConfig
from models.tssm import TSSM, TSSMConfig
from models.vae import VAE, VAEConfig
from utils.checkpoint import CheckpointError, load_weights
from utils.logdir import StageDir, require_upstream

DYNAMICS = {"mdrnn": (MDRNN, MDRNNConfig), "rssm": (RSSM, RSSMConfig), "tssm": (TSSM, TSSMConfig)}


def load_vae(logdir: Path, device: torch.device) -> tuple[VAE, str]:
    """V from <logdir>/vae/best.pt and that checkpoint's id."""
    ckpt = require_upstream(StageDir(logdir, "vae"), "trained V",
                            f"python trainvae.py --logdir {logdir} --dataset <rollouts>")
    vae = VAE(VAEConfig(**ckpt["identity"]["model"])).to(device)
    load_weights(vae, ckpt["model"], StageDir(logdir, "vae").best)
    return vae.eval(), ckpt["id"]


def dynamics_config(name: str, values: dict[str, Any]) -> dict[str, Any]:
    """The config of M `name` picked by field name from `values` (sizes and parsed flags)."""
    return {f.name: values[f.name] for f in fields(DYNAMICS[name][1])}


def with_defaults(name: str, config: dict[str, Any]) -> dict[str, Any]:
    """A saved config of M `name` with the default of every field added since it was saved,
    so a checkpoint from before a new option still resumes while the option stays off."""
    return asdict(DYNAMICS[name][1](**config))


def build_dynamics(name: str, config: dict) -> torch.nn.Module:
    cls, cfg = DYNAMICS[name]
    return cls(cfg(**config))


def load_dynamics(logdir: Path, name: str, vae: VAE, vae_id: str, device: torch.device) -> tuple[torch.nn.Module, str]:
    """M from <logdir>/dynamics/<name>/best.pt, refused if trained on another V."""
    stage = StageDir(logdir, f"dynamics/{name}")
    ckpt = require_upstream(stage, f"trained M ({name})",
                            f"python traindynamics.py --model {name} --logdir {logdir} --dataset <rollouts>")
    identity = ckpt["identity"]
    if identity["model"]["z_size"] != vae.cfg.z_size:
        raise CheckpointError(
            f"{stage.best} expects z of size {identity['model']['z_size']} but V has {vae.cfg.z_size}: "
            f"retrain M with traindynamics.py --noreload"
        )
    if identity["vae"] != vae_id:
        raise CheckpointError(f"{stage.best} was trained on another V than {logdir}/vae/best.pt: "
                              "retrain M with traindynamics.py --noreload")
    m = build_dynamics(name, identity["model"]).to(device)
    load_weights(m, ckpt["model"], stage.best)
    return m.eval(), ckpt["id"]
