"""``eqagent bench relax``: seconds per relaxation and effective GFLOP/s, against a plain-matmul roofline.

Hopfield nets (:class:`eqagent.energy.EnergyNet`), free phase, input clamped, fixed-point form, T = 20, no
convergence checks: (a) world-model size — 8-64-64-7, batch 5,120 (what a 5-member ensemble of batch 1,024 computes);
(b) MNIST — 784-500-10, batch 256; and, on CUDA, (c) MNIST batch 4,096 and (d) a wide 784-2048-2048-10 net, batch
1,024. Backends: torch eager (the engine's :func:`eqagent.relax.settle`), ``torch.compile`` of the same
``settle`` call, and Triton when CUDA is present (the engine's
dispatch: the fused per-layer step).
FLOPs count the matmuls only: the clamped input's drive once, then every free-free coupling at every step.
The roofline is the device's plain ``matmul`` throughput measured in the same run; ``cpu_ratio_to_matmul`` is the
worse of (a) and (b) of eager time / (FLOPs / matmul throughput). ``products_only_seconds`` times the relaxation's
matrix products alone, at their own shapes (feature-major, as the engine computes them) with nothing else: the
drive once and every coupling's two products at every step; its ratio to the roofline says how much of the budget
the shapes themselves use.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from eqagent.energy import EnergyNet
from eqagent.kernels.autotune import median_seconds
from eqagent.relax import settle

__all__ = ["RelaxBenchConfig", "relax_flops", "run_relax_bench"]


@dataclass
class RelaxBenchConfig:
    """Settings of ``eqagent bench relax``.

    Attributes:
        steps: Relaxation steps T.
        repeats: Timed repetitions (the median is reported).
        compile: Also time ``torch.compile`` (slow to compile on CPU).
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        threads: torch CPU threads (0: default).
    """

    steps: int = 20
    repeats: int = 10
    compile: bool = True
    device: str = "auto"
    threads: int = 0


CASES = {
    "world_model": {"sizes": [8, 64, 64, 7], "batch": 5120},
    "mnist": {"sizes": [784, 500, 10], "batch": 256},
}
CUDA_CASES = {
    "mnist_4096": {"sizes": [784, 500, 10], "batch": 4096},
    "wide": {"sizes": [784, 2048, 2048, 10], "batch": 1024},
}


def relax_flops(sizes: list[int], batch: int, steps: int) -> int:
    """Matmul FLOPs of a free relaxation with layer 0 clamped (see the module docstring)."""
    flops = 2 * batch * sizes[0] * sizes[1]
    per_step = sum(2 * batch * sizes[l] * sizes[l + 1] * 2 for l in range(1, len(sizes) - 1))
    return flops + steps * per_step


def _matmul_gflops(device: torch.device, repeats: int) -> float:
    a = torch.randn(2048, 1024, device=device)
    b = torch.randn(1024, 1024, device=device)
    t = median_seconds(lambda: a @ b, repeats)
    return 2 * 2048 * 1024 * 1024 / t / 1e9


def _compiled_relax(net: EnergyNet, steps: int):
    """``torch.compile`` of the engine's one relaxation path, :func:`eqagent.relax.settle` (free phase)."""
    return torch.compile(lambda init: settle(net, init, steps=steps).states)


def _products_seconds(case: dict, steps: int, device: torch.device, repeats: int) -> float:
    """Time of the relaxation's matrix products alone (see the module docstring), feature-major shapes."""
    sizes, batch = case["sizes"], case["batch"]

    def mats(rows: int, cols: int) -> torch.Tensor:
        return torch.rand(rows, cols, device=device)

    drive = (mats(sizes[1], sizes[0]), mats(sizes[0], batch))  # W_0ᵀ x_ᵀ: (n_1, B)
    pairs = []
    for l in range(1, len(sizes) - 1):
        pairs.append((mats(sizes[l], sizes[l + 1]), mats(sizes[l + 1], batch)))  # top-down into layer l
        pairs.append((mats(sizes[l + 1], sizes[l]), mats(sizes[l], batch)))  # bottom-up into layer l + 1

    def run() -> None:
        torch.matmul(*drive)
        for _ in range(steps):
            for a, b in pairs:
                torch.matmul(a, b)

    return median_seconds(run, repeats)


def run_relax_bench(cfg: RelaxBenchConfig) -> dict:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dev = torch.device("cuda" if (cfg.device == "auto" and torch.cuda.is_available()) else
                       ("cpu" if cfg.device == "auto" else cfg.device))  # fmt: skip
    gflops_mm = _matmul_gflops(dev, cfg.repeats)
    out: dict = {"device": str(dev), "matmul_gflops": gflops_mm, "steps": cfg.steps}
    ratios = []
    cases = {**CASES, **(CUDA_CASES if dev.type == "cuda" else {})}
    for name, case in cases.items():
        net = EnergyNet(case["sizes"], generator=torch.Generator().manual_seed(0)).to(dev)
        x = torch.rand(case["batch"], case["sizes"][0], device=dev)
        init = net.feedforward(x)
        flops = relax_flops(case["sizes"], case["batch"], cfg.steps)
        res = {"flops": flops, "matmul_roofline_seconds": flops / (gflops_mm * 1e9)}
        net.relax_backend = "torch"
        t = median_seconds(lambda: settle(net, init, steps=cfg.steps), cfg.repeats)  # noqa: B023
        res["torch_eager_seconds"] = t
        res["torch_eager_gflops"] = flops / t / 1e9
        res["ratio_to_matmul"] = t / res["matmul_roofline_seconds"]
        if dev.type == "cpu" and name in CASES:
            ratios.append(res["ratio_to_matmul"])
        t = _products_seconds(case, cfg.steps, dev, cfg.repeats)
        res["products_only_seconds"] = t
        res["products_only_ratio_to_matmul"] = t / res["matmul_roofline_seconds"]
        if cfg.compile:
            try:
                fn = _compiled_relax(net, cfg.steps)
                t = median_seconds(lambda: fn(init), cfg.repeats)  # noqa: B023
                res["torch_compile_seconds"] = t
                res["torch_compile_gflops"] = flops / t / 1e9
            except Exception as e:
                res["torch_compile_error"] = f"{type(e).__name__}: {e}"[:300]
        if dev.type == "cuda":
            net.relax_backend = "triton"
            t = median_seconds(lambda: settle(net, init, steps=cfg.steps), cfg.repeats)  # noqa: B023
            res["triton_seconds"] = t
            res["triton_gflops"] = flops / t / 1e9
            res["triton_speedup_vs_eager"] = res["torch_eager_seconds"] / t
            res["triton_fraction_of_matmul"] = res["triton_gflops"] / gflops_mm
        else:
            res["triton"] = "not measured: no CUDA device"
        out[name] = res
    if ratios:
        out["cpu_ratio_to_matmul"] = max(ratios)
    return out
