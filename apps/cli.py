"""The ``eqagent`` console command.

Subcommands (each also runnable as ``python scripts/<name>.py``):

* ``run`` — train and evaluate the EP agent on a Gym id (the main job: CartPole-v1 by default);
* ``compare`` — the EP agent side by side with Stable-Baselines3 (CSV, markdown, PNG, TensorBoard);
* ``suite`` — the default EP agent on a suite of envs against the best SB3 algorithm (JSON, markdown, PNG);
* ``sweep`` — a hyperparameter search over agent config fields on Ray Tune (tables, curves, best config);
* ``gradcheck`` — EP estimate vs the exact gradient (implicit differentiation);
* ``mnist`` — the MNIST warm-up classifier trained by EP, side by side with backprop;
* ``dream`` — train the dreaming classifier on MNIST, dream a 10×k grid, score it with a backprop judge;
* ``bench NAME`` — the benchmarks of :data:`BENCHMARKS`.

Every subcommand accepts ``--json``: its last stdout line is then one JSON object with its figures (``null`` for
a figure the run could not measure). A user error (a bad option, an unknown env, a config value out of range)
prints one line ``eqagent: error: ...`` on stderr and exits with status 2.

Handlers are imported when their subcommand runs (``eqagent gradcheck`` does not load the RL stack).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from eqagent.apps.config import add_dataclass_args, dataclass_from_args

__all__ = ["BENCHMARKS", "COMMANDS", "main"]


@dataclass(frozen=True)
class Command:
    """A subcommand: its help line and a loader returning ``(config class, function(config) -> figures)``."""

    help: str
    load: Callable[[], tuple[type, Callable[..., dict]]]


def _run():
    from eqagent.agents.run import RunConfig, run_agent

    return RunConfig, run_agent


def _compare():
    from eqagent.agents.compare import CompareConfig, run_compare

    return CompareConfig, run_compare


def _suite():
    from eqagent.agents.suite import SuiteConfig, run_suite

    return SuiteConfig, run_suite


def _sweep():
    from eqagent.agents.sweep import SweepConfig, run_sweep

    return SweepConfig, run_sweep


def _gradcheck():
    from eqagent.apps.gradcheck import GradCheckConfig, run_gradcheck

    return GradCheckConfig, run_gradcheck


def _mnist():
    from eqagent.apps.mnist import MNISTConfig, run_mnist

    return MNISTConfig, run_mnist


def _dream():
    from eqagent.apps.dream import DreamRunConfig, run_dream

    return DreamRunConfig, run_dream


def _bench_optim():
    from eqagent.apps.bench.optim import OptimBenchConfig, run_optim_bench

    return OptimBenchConfig, run_optim_bench


def _bench_relax():
    from eqagent.apps.bench.relax import RelaxBenchConfig, run_relax_bench

    return RelaxBenchConfig, run_relax_bench


def _bench_imagine():
    from eqagent.apps.bench.imagine import ImagineBenchConfig, run_imagine_bench

    return ImagineBenchConfig, run_imagine_bench


def _bench_plasticity():
    from eqagent.apps.bench.plasticity import PlasticityBenchConfig, run_plasticity_bench

    return PlasticityBenchConfig, run_plasticity_bench


def _bench_replay():
    from eqagent.agents.mnist_agent import ReplayBenchConfig, run_replay_bench

    return ReplayBenchConfig, run_replay_bench


def _bench_speed():
    from eqagent.agents.speed_bench import SpeedBenchConfig, run_speed_bench

    return SpeedBenchConfig, run_speed_bench


def _bench_worldmodel():
    from eqagent.agents.worldmodel_bench import WorldModelBenchConfig, run_worldmodel_bench

    return WorldModelBenchConfig, run_worldmodel_bench


COMMANDS: dict[str, Command] = {
    "run": Command("train and evaluate the EP agent on a Gym id (default CartPole-v1)", _run),
    "compare": Command("the EP agent side by side with SB3 (zoo hyperparameters)", _compare),
    "suite": Command(
        "the default EP agent on the suite of envs vs the best SB3 algorithm (held steps)", _suite
    ),
    "sweep": Command("hyperparameter sweep of the EP agent on Ray Tune (seeds as a dimension)", _sweep),
    "gradcheck": Command("EP gradient vs autograd (implicit differentiation)", _gradcheck),
    "mnist": Command("MNIST warm-up: 784-500-10 energy net trained by EP (+ backprop)", _mnist),
    "dream": Command("dream digits: clamp a label, free the image, relax (EP trained both ways)", _dream),
}

BENCHMARKS: dict[str, Command] = {
    "optim": Command("EP optimizer vs Adam on MNIST", _bench_optim),
    "relax": Command("relaxation speed vs matmul roofline", _bench_relax),
    "imagine": Command(
        "the planner's imagined rollout: eager, torch.compile, CUDA graphs, Triton", _bench_imagine
    ),
    "plasticity": Command("Hebbian plastic vs plain RNN on pattern completion", _bench_plasticity),
    "replay": Command(
        "class-incremental split-MNIST through the env, with and without dream replay", _bench_replay
    ),
    "worldmodel": Command(
        "online EP world model vs backprop, surprise gate, physics shift", _bench_worldmodel
    ),
    "speed": Command(
        "EP agent vs SB3 PPO: ms per step, wall-clock to the threshold, vec-env speed-up", _bench_speed
    ),
}


class _Parser(argparse.ArgumentParser):
    """Argument errors are one line, ``eqagent: error: ...``, exit status 2."""

    def error(self, message: str):
        raise UsageError(message)


class UsageError(Exception):
    """A user error: printed as one line, exit status 2."""


def _jsonable(value):
    """Non-finite floats become ``null`` (JSON has no NaN); containers are walked."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return _jsonable(value.item())
    return value


def _emit(result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(_jsonable(result), allow_nan=False, default=str), flush=True)
    else:
        for k, v in result.items():
            if not isinstance(v, (dict, list)):
                print(f"{k}: {v}")


def _add(sub, name: str, command: Command, selected: bool) -> None:
    p = sub.add_parser(name, help=command.help, description=command.help)
    if selected:
        cfg_cls, _ = command.load()
        add_dataclass_args(p, cfg_cls)
        p.add_argument(
            "--json", action="store_true", help="print one JSON object with the figures as last line"
        )


def _parse(argv: list[str]) -> tuple[argparse.Namespace, Command]:
    """Builds only the selected subcommand's options (the others are listed, not loaded)."""
    parser = _Parser(prog="eqagent", description="Equilibrium Propagation agents and tools")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    words = [a for a in argv if not a.startswith("-")]
    name = words[0] if words else None
    bench_name = words[1] if len(words) > 1 and name == "bench" else None
    for cmd, command in COMMANDS.items():
        _add(sub, cmd, command, cmd == name)
    bench = sub.add_parser("bench", help="benchmarks (the figures of the issues)", description="benchmarks")
    bench_sub = bench.add_subparsers(dest="bench", required=True, parser_class=_Parser)
    for cmd, command in BENCHMARKS.items():
        _add(bench_sub, cmd, command, cmd == bench_name)
    args = parser.parse_args(argv)
    command = BENCHMARKS[args.bench] if args.command == "bench" else COMMANDS[args.command]
    return args, command


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "the input was wrong" (as opposed to a bug): one line, exit 2."""
    from eqagent.agents.cluster import MissingExtra

    errors: list[type[BaseException]] = [UsageError, ValueError, FileNotFoundError, MissingExtra]
    try:
        import gymnasium

        errors.append(gymnasium.error.Error)
    except ImportError:  # pragma: no cover - gymnasium is a dependency
        pass
    return tuple(errors)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``eqagent`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args, command = _parse(argv)
        cfg_cls, fn = command.load()
        cfg = dataclass_from_args(cfg_cls, args)
        t0 = time.perf_counter()
        result = fn(cfg)
        result.setdefault("seconds", time.perf_counter() - t0)
    except _user_errors() as e:
        print(f"eqagent: error: {e}".splitlines()[0], file=sys.stderr)
        return 2
    _emit(result, args.json)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
