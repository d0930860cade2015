"""The gradient check: EP estimate vs the exact gradient at the free equilibrium (``eqagent gradcheck``).

The exact gradient is computed by implicit differentiation (recurrent backprop) with autograd, see
:func:`eqagent.ep.true_gradients`. The headline figures use a smooth ρ (sigmoid), where ``L(θ)`` is
differentiable and EP's theorem applies exactly; the same check is also reported for the engine's default
hard-sigmoid net, whose loss has kinks where a unit meets a clip bound: a unit that crosses a bound between the
free and nudged equilibria biases the estimate at finite β, which vanishes as β → 0 (reported at β/10 too).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from eqagent.costs import CrossEntropyCost, MSECost
from eqagent.energy import EnergyNet
from eqagent.ep import gradient_check

__all__ = ["GradCheckConfig", "make_random_problem", "run_gradcheck"]


@dataclass
class GradCheckConfig:
    """Settings of ``eqagent gradcheck``.

    Attributes:
        sizes: Layer sizes of the random net (input, two hidden layers, output).
        batch: Number of random samples.
        cost: ``mse`` (one-hot targets) or ``cross_entropy`` (through a readout).
        activation: ρ of the headline check (``sigmoid``: smooth, where EP's theorem holds exactly).
        beta_small: β of the symmetric check (acceptance figures).
        beta_large: β of the one-sided check that shows the first-order bias.
        init_gain: Weight scale; below about 0.5 the energy is convex inside the box, a unique equilibrium.
        seed: Random seed.
    """

    sizes: tuple[int, ...] = (24, 32, 32, 10)
    batch: int = 32
    cost: str = "mse"
    activation: str = "sigmoid"
    beta_small: float = 0.01
    beta_large: float = 0.5
    init_gain: float = 0.4
    seed: int = 0

    def __post_init__(self) -> None:
        if len(self.sizes) < 3:
            raise ValueError(f"sizes needs at least one hidden layer, got {self.sizes}")
        if self.cost not in ("mse", "cross_entropy"):
            raise ValueError(f"cost must be 'mse' or 'cross_entropy', got {self.cost!r}")
        if not (self.beta_small > 0 and self.beta_large > 0):
            raise ValueError("betas must be > 0")
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1, got {self.batch}")


def make_random_problem(cfg: GradCheckConfig, activation: str):
    """A float64 random net (biases centred in the box), cost, inputs in [0, 1] and random targets."""
    g = torch.Generator().manual_seed(cfg.seed)
    net = EnergyNet(
        cfg.sizes, activation=activation, dtype=torch.float64, generator=g, init_gain=cfg.init_gain
    )
    low, high = (0.3, 0.7) if activation in ("hard_sigmoid",) else (-0.5, 0.5)
    with torch.no_grad():
        for b in net.biases[1:]:
            b.uniform_(low, high, generator=g)
    n_out = cfg.sizes[-1]
    x = torch.rand(cfg.batch, cfg.sizes[0], generator=g, dtype=torch.float64)
    labels = torch.randint(0, n_out, (cfg.batch,), generator=g)
    if cfg.cost == "mse":
        cost = MSECost()
        target = torch.nn.functional.one_hot(labels, n_out).double()
    else:
        cost = CrossEntropyCost(n_out, n_out, activation=activation, dtype=torch.float64, generator=g)
        target = labels
    return net, cost, x, target


def _check(cfg: GradCheckConfig, activation: str, beta: float, symmetric: bool) -> dict:
    net, cost, x, target = make_random_problem(cfg, activation)
    mode = "gradient" if activation in ("sigmoid", "tanh") else "fixed_point"
    res = gradient_check(
        net, cost, x, target, beta, symmetric, mode=mode, steps=20000 if mode == "gradient" else 5000
    )
    return {"cosine_min": res.cosine_min, "rel_err_max": res.rel_err_max}


def run_gradcheck(cfg: GradCheckConfig) -> dict:
    """Runs the check and returns the JSON figures (see the module docstring)."""
    sym = _check(cfg, cfg.activation, cfg.beta_small, True)
    one = _check(cfg, cfg.activation, cfg.beta_large, False)
    out = {
        "method": "implicit differentiation (recurrent backprop) at the free equilibrium, float64",
        "sizes": list(cfg.sizes),
        "activation": cfg.activation,
        "cost": cfg.cost,
        "beta_small": cfg.beta_small,
        "cosine_min": sym["cosine_min"],
        "rel_err_max": sym["rel_err_max"],
        "beta_large": cfg.beta_large,
        "one_sided_cosine_min": one["cosine_min"],
        "one_sided_rel_err_max": one["rel_err_max"],
    }
    if cfg.activation != "hard_sigmoid":
        hs = {f"beta_{cfg.beta_small:g}": _check(cfg, "hard_sigmoid", cfg.beta_small, True)}
        hs[f"beta_{cfg.beta_small / 10:g}"] = _check(cfg, "hard_sigmoid", cfg.beta_small / 10, True)
        out["hard_sigmoid_symmetric"] = hs
    out["passed"] = bool(out["cosine_min"] >= 0.999 and out["rel_err_max"] <= 0.02)
    return out
