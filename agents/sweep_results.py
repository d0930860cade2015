"""The results of an ``eqagent sweep`` (:mod:`eqagent.agents.sweep`): one row per trial, one row per config (its
seeds grouped, ranked), and the files: ``sweep_trials.csv``, ``sweep_summary.md`` / ``.csv``, ``sweep_curves.png``
and ``best_config.json`` (the best config's complete agent config, which ``eqagent run --config`` reads)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from eqagent.configs import config_to_dict

if TYPE_CHECKING:
    from eqagent.agents.sweep import SearchDimension, SweepConfig

__all__ = ["config_rows", "trial_rows", "write_outputs"]


def trial_rows(grid: Any, dims: list[SearchDimension], cfg: SweepConfig) -> list[dict[str, Any]]:
    rows = []
    for result in grid:
        conf, m = result.config or {}, result.metrics or {}
        curve = []
        df = result.metrics_dataframe
        if df is not None and "env_steps" in df:
            curve = [
                (int(s), float(v)) for s, v in zip(df["env_steps"], df["eval_mean"]) if not math.isnan(v)
            ]
        steps = int(m.get("env_steps", 0))
        status = "error" if result.error else ("done" if steps >= cfg.total_timesteps else "stopped")
        held = m.get("steps_held")
        rows.append({
            "trial_id": m.get("trial_id", Path(str(result.path)).name),
            "seed": int(conf.get("seed", conf.get("__trial_index__", 0))),
            "config": {d.field: conf.get(d.field) for d in dims}, "status": status, "env_steps": steps,
            "steps_held": held if m.get("held") else None, "steps_first": m.get("steps_first") if m.get("steps_first", math.inf) < cfg.penalty() else None,
            "final_eval": m.get("eval_mean"), "auc": m.get("auc"), "time_s": float(m.get("time_total_s", 0.0)),
            "error": str(result.error).strip().splitlines()[-1][:200] if result.error else "", "_curve": curve,
        })  # fmt: skip
    return rows


def config_rows(
    trials: list[dict], dims: list[SearchDimension], defaults: dict, cfg: SweepConfig
) -> list[dict]:
    """One row per config (seeds grouped), best first.

    A config is ranked by the median over its seeds of ``metric``, a seed stopped early by the scheduler counting
    as the worst (not held; ``auc`` −inf); configs with every seed run (done or stopped, none failed) and at
    least one done come first. Figures shown are over the seeds that ran their budget.
    """
    from eqagent.agents.evaluation import format_steps, median_steps

    groups: dict[str, list[dict]] = {}
    for t in trials:
        groups.setdefault(json.dumps(t["config"], sort_keys=True), []).append(t)
    rows = []
    for key, ts in groups.items():
        ran = [t for t in ts if t["status"] != "error"]
        done = [t for t in ran if t["status"] == "done"]
        held_ran = [t["steps_held"] if t["status"] == "done" else None for t in ran]
        auc_ran = [t["auc"] if t["status"] == "done" else -math.inf for t in ran]
        steps_med = median_steps(held_ran) if ran else math.inf
        auc_med = float(np.median(auc_ran)) if ran else -math.inf
        held = [t["steps_held"] for t in done]
        rows.append({
            "config": json.loads(key), "seeds": sorted(t["seed"] for t in ts), "seeds_done": len(done),
            "seeds_stopped": len(ran) - len(done), "complete": len(ran) == cfg.seeds and bool(done),
            "default": json.loads(key) == defaults,
            "steps_held_median": None if math.isinf(steps_med) else steps_med,
            "steps_held": format_steps(held, cfg.total_timesteps) if done else "—",
            "final_eval_median": float(np.median([t["final_eval"] for t in done])) if done else None,
            "auc_median": float(np.median([t["auc"] for t in done])) if done else None,
            "errors": sorted({t["error"] for t in ts if t["error"]}),
            "_score": (steps_med, -auc_med) if cfg.metric == "steps" else (-auc_med, steps_med),
            "_trials": ts,
        })  # fmt: skip
    rows.sort(key=lambda r: (not r["complete"], r["_score"]))
    for i, r in enumerate(rows, 1):
        r["rank"] = i
    return rows


def _cell(value: Any) -> str:
    """A table cell: floats to 4 significant digits."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_outputs(exp: Path, trials: list[dict], configs: list[dict], dims: list[SearchDimension],
                   cfg: SweepConfig, settings: dict) -> dict[str, str | None]:  # fmt: skip
    from eqagent.agents.config import agent_config_for_id
    from eqagent.agents.evaluation import plot_curves

    names = [d.field for d in dims]
    with open(exp / "sweep_trials.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["trial_id", "seed", *names, "status", "env_steps", "steps_held", "steps_first", "final_eval",
                    "auc", "time_s", "error"])  # fmt: skip
        for t in trials:
            w.writerow([t["trial_id"], t["seed"], *(t["config"][n] for n in names), t["status"], t["env_steps"],
                        t["steps_held"], t["steps_first"], t["final_eval"], t["auc"], f"{t['time_s']:.1f}", t["error"]])  # fmt: skip
    with open(exp / "sweep_summary.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            ["rank", *names, "seeds_done", "steps_held_median", "final_eval_median", "auc_median", "default"]
        )
        for c in configs:
            w.writerow([c["rank"], *(c["config"][n] for n in names), c["seeds_done"], c["steps_held_median"],
                        c["final_eval_median"], c["auc_median"], c["default"]])  # fmt: skip
    fmt = lambda v: "—" if v is None else f"{v:.1f}"  # noqa: E731
    lines = [
        f"### Sweep {cfg.name}: {cfg.env}, {cfg.search} search, {cfg.seeds} seeds, {cfg.total_timesteps:,} steps, "
        f"metric {cfg.metric}, scheduler {cfg.scheduler}",
        "",
        "| rank | " + " | ".join(names) + " | seeds done | steps to threshold held, median (min–max) "
        "| final eval (median) | mean eval over the run (median) | note |",
        "|" + "---|" * (len(names) + 6),
    ]
    for c in configs:
        note = ", ".join(filter(None, ["default" if c["default"] else "", "best" if c is configs[0] and c["complete"] else "",
                                       *(f"error: {e}" for e in c["errors"])]))  # fmt: skip
        stopped = f" ({c['seeds_stopped']} stopped)" if c["seeds_stopped"] else ""
        lines.append(f"| {c['rank']} | " + " | ".join(_cell(c["config"][n]) for n in names)
                     + f" | {c['seeds_done']}/{cfg.seeds}{stopped} | {c['steps_held']} | {fmt(c['final_eval_median'])} "
                     f"| {fmt(c['auc_median'])} | {note} |")  # fmt: skip
    (exp / "sweep_summary.md").write_text("\n".join(lines) + "\n")
    curves = {}
    for c in configs[:6]:
        per_seed = [dict(t["_curve"]) for t in c["_trials"] if t["_curve"]]
        if not per_seed:
            continue
        steps = sorted(set().union(*per_seed))
        vals = [[p[s] for p in per_seed if s in p] for s in steps]
        label = f"#{c['rank']} " + ", ".join(f"{n.split('.')[-1]}={_cell(c['config'][n])}" for n in names)
        curves[label] = (
            steps,
            [float(np.mean(v)) for v in vals],
            [min(v) for v in vals],
            [max(v) for v in vals],
        )
    png = None
    if curves:
        png = exp / "sweep_curves.png"
        plot_curves(
            curves, settings["threshold"], png, f"{cfg.env}: sweep {cfg.name} (mean, min–max over seeds)"
        )
    best_file = None
    best = next((c for c in configs if c["complete"]), None)
    if best is not None:
        best_cfg = agent_config_for_id(cfg.env, **{**settings["fixed"], **best["config"]})
        best_file = exp / "best_config.json"
        best_file.write_text(json.dumps(config_to_dict(best_cfg), indent=1))
    return {"summary_md": str(exp / "sweep_summary.md"), "trials_csv": str(exp / "sweep_trials.csv"),
            "curves_png": str(png) if png else None, "best_config": str(best_file) if best_file else None}  # fmt: skip
