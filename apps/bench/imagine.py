"""``eqagent bench imagine``: the planner's imagined rollout, per backend, at the agent's planning size and larger.

A world model (two hidden layers of 64, 5 members; CartPole's 4-d observations and 2 actions) imagines
``candidates`` action sequences of ``horizon`` steps from one observation — what one CEM iteration of the agent
computes — through the world model's rollout (:class:`eqagent.imagination.Imagination`, the action sequences
encoded once as the planner does). Timed (median of ``repeats``): the torch
loop (eager), the torch loop under ``torch.compile``, and on CUDA the torch loop replayed as a CUDA graph and the
fused Triton rollout (:mod:`eqagent.kernels.triton_imagine`); ``dispatch`` is what ``imagine_backend="auto"``
chooses there. Every backend's imagined observations are compared with eager's (``max_abs_diff``). A figure a
device cannot measure (CUDA graphs and Triton on CPU) is ``null`` with the reason in ``notes``.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import torch

from eqagent.imagination import Imagination
from eqagent.kernels.autotune import median_seconds
from eqagent.world_model import EPWorldModel, WorldModelConfig

__all__ = ["ImagineBenchConfig", "run_imagine_bench"]


@dataclass
class ImagineBenchConfig:
    """Settings of ``eqagent bench imagine``.

    Attributes:
        candidates: Candidate sequences per case, comma-separated (the agent's CartPole planner uses 128).
        horizon: Imagined steps.
        repeats: Timed repetitions (the median is reported).
        compile: Also time ``torch.compile`` (slow to compile on CPU).
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        threads: torch CPU threads (0: default).
    """

    candidates: str = "128,1024"
    horizon: int = 20
    repeats: int = 20
    compile: bool = True
    device: str = "auto"
    threads: int = 0

    def __post_init__(self) -> None:
        sizes = self.sizes()
        if not sizes or min(sizes) < 1 or self.horizon < 1 or self.repeats < 1 or self.threads < 0:
            raise ValueError("candidates, horizon and repeats must be >= 1, threads >= 0")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")

    def sizes(self) -> list[int]:
        try:
            return [int(c) for c in self.candidates.split(",") if c.strip()]
        except ValueError:
            raise ValueError(
                f"candidates must be integers separated by commas, got {self.candidates!r}"
            ) from None


def _capture(fn):
    """``fn`` captured as a CUDA graph (after a warm-up run on a side stream, as PyTorch's docs do it)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static = fn()
    graph.replay()
    torch.cuda.synchronize()
    return graph, static


def _model(device: torch.device, backend: str) -> EPWorldModel:
    env = gym.make("CartPole-v1")
    wm = EPWorldModel(
        env.observation_space, env.action_space, WorldModelConfig(imagine_backend=backend), device
    )
    return wm


def _case(eager: EPWorldModel, n: int, cfg: ImagineBenchConfig, gen, notes: list) -> dict:
    """One size: every backend's median seconds, speed-up over eager, and difference from eager's output."""
    from eqagent.kernels import triton_imagine

    device = eager.device
    obs = torch.randn(n, 4, generator=gen, device=device)
    seqs = torch.randint(0, 2, (n, cfg.horizon), generator=gen, device=device)
    enc = eager.encode_action(seqs)  # (N, H, A): validated and encoded once, as the planner does per call
    rollout = Imagination(eager).rollout
    run_eager = lambda: rollout(obs, enc)  # noqa: E731
    case: dict = {"candidates": n, "eager_seconds": median_seconds(run_eager, cfg.repeats)}
    case["compile_seconds"] = case["cuda_graph_seconds"] = case["triton_seconds"] = None
    ref = run_eager()["obs"]
    diffs: dict = {}
    if cfg.compile:
        compiled = torch.compile(lambda o, e: rollout(o, e)["obs"])
        diffs["compile"] = float((compiled(obs, enc) - ref).abs().max())
        case["compile_seconds"] = median_seconds(lambda: compiled(obs, enc), cfg.repeats)
    if device.type == "cuda":
        try:
            graph, static = _capture(run_eager)
            diffs["cuda_graph"] = float((static["obs"] - ref).abs().max())
            case["cuda_graph_seconds"] = median_seconds(graph.replay, cfg.repeats)
        except RuntimeError as e:  # a capture the rollout's ops do not allow: reported, not fatal
            notes.append(f"CUDA graph capture failed at {n} candidates: {str(e).splitlines()[0]}")
        if triton_imagine.available(device):
            fused = _model(device, "triton")
            fused.load_state_dict(eager.state_dict())
            fused_rollout = Imagination(fused).rollout
            diffs["triton"] = float((fused_rollout(obs, enc)["obs"] - ref).abs().max())
            case["triton_seconds"] = median_seconds(lambda: fused_rollout(obs, enc), cfg.repeats)
    for name in ("compile", "cuda_graph", "triton"):
        t = case[f"{name}_seconds"]
        case[f"{name}_speedup"] = None if t is None else case["eager_seconds"] / t
    case["max_abs_diff"] = diffs
    auto = Imagination(_model(device, "auto"))
    auto.wm.load_state_dict(eager.state_dict())
    auto.rollout(obs, enc)
    case["dispatch"] = auto.last_backend  # auto on CUDA: the faster at this shape, timed once
    return case


def run_imagine_bench(cfg: ImagineBenchConfig) -> dict:
    """Times every backend at every size; returns the figures (seconds, speed-ups over eager, dispatch)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    cuda = torch.cuda.is_available()
    if cfg.device == "cuda" and not cuda:
        raise ValueError("device cuda requested but CUDA is not available")
    device = torch.device("cuda" if cfg.device == "cuda" or (cfg.device == "auto" and cuda) else "cpu")
    from eqagent.kernels import triton_imagine

    eager = _model(device, "torch")
    gen = torch.Generator(device).manual_seed(0)
    notes: list[str] = []
    with torch.no_grad():
        cases = {str(n): _case(eager, n, cfg, gen, notes) for n in cfg.sizes()}
    if device.type != "cuda":
        notes.append("CUDA graphs and Triton are timed on CUDA only (no CUDA here)")
    elif not triton_imagine.available(device):
        notes.append("Triton is not installed: pip install 'eqagent[triton]'")
    return {"device": str(device), "horizon": cfg.horizon, "members": eager.config.members, "cases": cases,
            "notes": notes}  # fmt: skip
