"""Which gait HalfCheetah-v5 trains in: upright or flipped onto its back (issue 19's diagnosis).

`python scripts/halfcheetah_gait.py --steps 10000 --seed 0 [--eval] [--set FIELD=VALUE ...]` trains
``EPAgent("HalfCheetah-v5", seed=SEED, **overrides)`` for ``--steps`` env steps on one thread and prints one JSON
line: per 500-step window of the replay (the newest ``world_model.replay_size`` transitions, 20,000 by default) the
share of steps whose pitch ``obs[1]`` (the root's angle, wrapped to (−π, π]) lies past ±1.6 rad — the cheetah on its
back — and the mean reward. With ``--eval``, also one 1,000-step deterministic episode of the trained agent scored
with every member (``planner.exploit_members="all"``) on ``make_eval_env("HalfCheetah-v5", SEED)``: its return, its
share of flipped steps and its mean forward velocity ``obs[8]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np
import torch
from eqagent.agents import EPAgent
from eqagent.agents.run import make_eval_env

from eqagent.configs import parse_assignment

FLIPPED = 1.6  # rad: past this the cheetah's back faces the floor


def _wrap(angle: np.ndarray) -> np.ndarray:
    return np.angle(np.exp(1j * angle))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--window", type=int, default=500)
    p.add_argument(
        "--eval", action="store_true", help="one deterministic every-member episode after training"
    )
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="agent config overrides")
    args = p.parse_args()
    if args.steps < 1 or args.window < 1:
        p.error(f"--steps and --window must be >= 1, got {args.steps}, {args.window}")
    torch.set_num_threads(1)
    try:
        overrides = dict(parse_assignment(s) for s in args.set)
        agent = EPAgent("HalfCheetah-v5", seed=args.seed, **overrides)
    except ValueError as e:
        p.error(str(e))
    agent.learn(args.steps)
    rp = agent.world_model.replay
    w = args.window
    order = rp.newest(rp.size)  # (size,) replay indices, oldest first
    flipped = np.abs(_wrap(rp.obs[order, 1])) > FLIPPED  # (size,)
    reward = rp.reward[order]
    out = {
        "seed": args.seed,
        "steps": args.steps,
        "set": args.set,
        "flipped_share": [round(float(flipped[i : i + w].mean()), 2) for i in range(0, rp.size, w)],
        "mean_reward": [round(float(reward[i : i + w].mean()), 2) for i in range(0, rp.size, w)],
    }
    if args.eval:
        base = agent.planner.cfg
        agent.planner.cfg = dataclasses.replace(base, exploit_members="all")
        env = make_eval_env("HalfCheetah-v5", args.seed)
        obs, state, start, ret = env.reset(), None, np.ones(1, bool), 0.0
        pitch, vel = [], []
        for _ in range(1000):
            pitch.append(float(obs[0][1]))
            vel.append(float(obs[0][8]))
            act, state = agent.predict(obs, state=state, episode_start=start, deterministic=True)
            obs, r, start, _ = env.step(act)
            ret += float(r[0])
        agent.planner.cfg = base
        out["eval"] = {
            "return": round(ret, 1),
            "flipped_share": round(float((np.abs(_wrap(np.array(pitch))) > FLIPPED).mean()), 2),
            "mean_forward_velocity": round(float(np.mean(vel)), 2),
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
