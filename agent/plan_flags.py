"""The planner's command-line flags, shared by every script that can act with a C: one
script passes its settings to the next (rounds.py to generation_script.py and
test_controller.py) as the same flags."""

from __future__ import annotations

import argparse
from dataclasses import replace

from agent.planner import LIGHT, PLANET, PlannerConfig
from utils.cli import UserError

METHODS = ["cmaes", "ac", "plan"]  # the kinds of C a script can act with: two trained, one planning
DEFAULTS = {"gamma": 0.99, "temperature": 1.0}


def planner_arguments(p: argparse.ArgumentParser) -> None:
    """The planner's flags, the same in every script that can plan."""
    g = p.add_argument_group("planner (--method plan)")
    g.add_argument("--plan-light", action="store_true",
                   help=f"a CPU budget: {LIGHT} instead of PlaNet's {PLANET}; the flags below still override")
    g.add_argument("--plan-horizon", type=int, help=f"H, steps imagined per candidate (default {PLANET['horizon']})")
    g.add_argument("--plan-iterations", type=int, help=f"I, CEM refits per real step (default {PLANET['iterations']})")
    g.add_argument("--plan-candidates", type=int, help=f"J, sequences per refit (default {PLANET['candidates']})")
    g.add_argument("--plan-top-k", type=int, help=f"K, candidates the refit keeps (default {PLANET['top_k']})")
    g.add_argument("--plan-gamma", type=float, help=f"discount of imagined rewards (default {DEFAULTS['gamma']})")
    g.add_argument("--plan-temperature", type=float, help=f"M's tau while planning (default {DEFAULTS['temperature']})")
    g.add_argument("--plan-survival", action="store_true",
                   help="score +1 per imagined step alive (Doom TakeCover) instead of M's predicted reward")


def planner_settings(a: argparse.Namespace) -> dict | None:
    """PlannerConfig settings from the flags when --method is plan, else None (plain values:
    workers rebuild the planner from them). Refuses bad budgets, and --plan-* flags given to
    a trained C, which would otherwise be ignored without a word."""
    chosen = {k: getattr(a, f"plan_{k}") for k in (*PLANET, *DEFAULTS) if getattr(a, f"plan_{k}") is not None}
    if a.method != "plan":
        given = [*chosen, *(k for k in ("light", "survival") if getattr(a, f"plan_{k}"))]
        if given:
            raise UserError(f"--plan-{given[0].replace('_', '-')} needs --method plan")
        return None
    out = {**(LIGHT if a.plan_light else PLANET), **DEFAULTS, "survival": a.plan_survival, **chosen}
    try:
        replace(PlannerConfig(2, True), **out)  # refuses bad numbers before any work
    except ValueError as e:
        raise UserError(str(e)) from e
    return out


def planner_flags(settings: dict) -> list[str]:
    """The command-line flags that give these settings: how one script tells another."""
    flags = [x for k in ("horizon", "iterations", "candidates", "top_k", "gamma", "temperature")
             for x in (f"--plan-{k.replace('_', '-')}", str(settings[k]))]
    return flags + (["--plan-survival"] if settings["survival"] else [])
