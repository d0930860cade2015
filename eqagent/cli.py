"""The ``eqagent`` console command.

Subcommands (each also runnable as ``python scripts/<name>.py``):

* ``gradcheck`` — EP estimate vs the exact gradient (implicit differentiation);
* ``mnist`` — the MNIST warm-up classifier trained by EP, side by side with backprop;
* ``run`` — train and evaluate the EP agent on a Gym id (the main job: CartPole-v1 by default);
* ``dream`` — train the dreaming classifier on MNIST, dream a 10×k grid, score it with a backprop judge;
* ``compare`` — the EP agent side by side with Stable-Baselines3 (CSV, markdown, PNG, TensorBoard);
* ``bench NAME`` — the benchmarks of :data:`BENCHMARKS` (``optim``, ...).

Every subcommand accepts ``--json``: its last stdout line is then one JSON object with its figures.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from collections.abc import Callable, Sequence

from eqagent.config import add_dataclass_args, dataclass_from_args

__all__ = ["main"]


def _emit(result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, default=float), flush=True)
    else:
        for k, v in result.items():
            if k not in ("history", "config", "runs", "evaluations", "dream_accuracy_per_label"):
                print(f"{k}: {v}")


def _cmd_gradcheck(args: argparse.Namespace) -> dict:
    from eqagent.gradcheck import GradCheckConfig, run_gradcheck

    cfg = dataclass_from_args(GradCheckConfig, args)
    t0 = time.perf_counter()
    out = run_gradcheck(cfg)
    out["seconds"] = time.perf_counter() - t0
    return out


def _cmd_mnist(args: argparse.Namespace) -> dict:
    from eqagent.classifier import MNISTConfig, train_mnist

    cfg = dataclass_from_args(MNISTConfig, args)
    if args.json:
        cfg.verbose = False
    summary, _ = train_mnist(cfg)
    return summary


def _bench(module: str, cfg_name: str, fn_name: str) -> Callable[[argparse.Namespace], dict]:
    def run(args: argparse.Namespace) -> dict:
        mod = importlib.import_module(module)
        cfg = dataclass_from_args(getattr(mod, cfg_name), args)
        t0 = time.perf_counter()
        out = getattr(mod, fn_name)(cfg)
        out.setdefault("seconds", time.perf_counter() - t0)
        return out

    return run


# (name, module, config class, function, help)
BENCHMARKS = (
    ("optim", "eqagent.bench.optim", "OptimBenchConfig", "run_optim_bench", "EP optimizer vs Adam on MNIST"),
    (
        "relax",
        "eqagent.bench.relax",
        "RelaxBenchConfig",
        "run_relax_bench",
        "relaxation speed vs matmul roofline",
    ),
    (
        "plasticity",
        "eqagent.bench.plasticity",
        "PlasticityBenchConfig",
        "run_plasticity_bench",
        "Hebbian plastic vs plain RNN on pattern completion",
    ),
    (
        "replay",
        "eqagent.agents.mnist_agent",
        "ReplayBenchConfig",
        "run_replay_bench",
        "class-incremental split-MNIST through the env, with and without dream replay",
    ),
    (
        "worldmodel",
        "eqagent.agents.worldmodel_bench",
        "WorldModelBenchConfig",
        "run_worldmodel_bench",
        "online EP world model vs backprop, surprise gate, physics shift",
    ),
)


def _add(sub, name: str, cfg_cls: type, help_text: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_text, description=help_text)
    add_dataclass_args(p, cfg_cls)
    p.add_argument("--json", action="store_true", help="print one JSON object with the figures as last line")
    return p


def _build_parser() -> tuple[argparse.ArgumentParser, dict[str, Callable[[argparse.Namespace], dict]]]:
    from eqagent.classifier import MNISTConfig
    from eqagent.gradcheck import GradCheckConfig

    parser = argparse.ArgumentParser(prog="eqagent", description="Equilibrium Propagation agents and tools")
    sub = parser.add_subparsers(dest="command", required=True)
    handlers: dict[str, Callable[[argparse.Namespace], dict]] = {}
    from eqagent.dreaming import DreamRunConfig

    for name, cfg_cls, fn, help_text in (
        ("gradcheck", GradCheckConfig, _cmd_gradcheck, "EP gradient vs autograd (implicit differentiation)"),
        ("mnist", MNISTConfig, _cmd_mnist, "MNIST warm-up: 784-500-10 energy net trained by EP (+ backprop)"),
        (
            "dream",
            DreamRunConfig,
            _bench("eqagent.dreaming", "DreamRunConfig", "run_dream"),
            "dream digits: clamp a label, free the image, relax (EP trained both ways)",
        ),
    ):
        _add(sub, name, cfg_cls, help_text)
        handlers[name] = fn
    run_mod = importlib.import_module(
        "eqagent.agents.run"
    )  # env-driven: looked up by name, not imported by the core
    _add(sub, "run", run_mod.RunConfig, "train and evaluate the EP agent on a Gym id (default CartPole-v1)")
    handlers["run"] = _bench("eqagent.agents.run", "RunConfig", "run_agent")
    cmp_mod = importlib.import_module("eqagent.agents.compare")
    _add(sub, "compare", cmp_mod.CompareConfig, "the EP agent side by side with SB3 (zoo hyperparameters)")
    handlers["compare"] = _bench("eqagent.agents.compare", "CompareConfig", "run_compare")
    bench = sub.add_parser("bench", help="benchmarks (the figures of the issues)", description="benchmarks")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    for name, module, cfg_name, fn_name, help_text in BENCHMARKS:
        cfg_cls = getattr(importlib.import_module(module), cfg_name)
        _add(bench_sub, name, cfg_cls, help_text)
        handlers["bench " + name] = _bench(module, cfg_name, fn_name)
    return parser, handlers


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``eqagent`` command; returns the exit status."""
    parser, handlers = _build_parser()
    args = parser.parse_args(argv)
    key = args.command + (" " + args.bench if args.command == "bench" else "")
    try:
        result = handlers[key](args)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"eqagent {args.command}: error: {e}", file=sys.stderr)
        return 2
    _emit(result, args.json)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
