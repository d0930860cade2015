"""Equilibrium Propagation: free and nudged phases, local updates, and the gradient check.

The EP estimate of the gradient of the loss ``L(θ) = C(s*(θ))`` at the free equilibrium ``s*`` is

    one-sided:  (1/β)  [∂F/∂θ(s^β, β) − ∂F/∂θ(s^0, 0)]
    symmetric:  (1/2β) [∂F/∂θ(s^{+β}, +β) − ∂F/∂θ(s^{−β}, −β)]

with ``F = E + βC``. For the energy's weights this is the local rule
``ΔW_l ∝ ρ(s_l)ᵀρ(s_{l+1})|nudged − ρ(s_l)ᵀρ(s_{l+1})|free``; for a readout inside the cost it is ``∂C/∂θ`` at the
nudged state(s). Everything is computed in closed form from the equilibria; no autograd graph is built.

:func:`true_gradients` computes the exact ``dL/dθ`` at the free equilibrium by **implicit differentiation**
(recurrent backprop / Almeida–Pineda): with ``H`` the Hessian of ``E`` over the free, unconstrained units,
``dL/dθ = ∂C/∂θ − (∂²E/∂θ∂s) H⁻¹ ∂C/∂s``; ``H⁻¹ ∂C/∂s`` is solved by conjugate gradients on autograd
Hessian-vector products. Units held at a bound of their box (active constraints of the projected dynamics)
do not move under small perturbations and are excluded from ``H``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from eqagent.costs import Cost
from eqagent.energy import EnergyNet, LayeredEnergy
from eqagent.energy.base import row_signs
from eqagent.relax import RelaxationDiverged, RelaxResult, check_states, settle

__all__ = [
    "EPConfig",
    "EPStep",
    "GradCheckResult",
    "ep_gradients",
    "free_phase",
    "gradient_check",
    "nudged_phase",
    "true_gradients",
    "write_grads",
]


@dataclass
class EPConfig:
    """Settings of one EP training step.

    Attributes:
        beta: Nudging strength β (> 0).
        symmetric: Use ±β nudging (removes the first-order bias of the one-sided estimate).
        free_steps: Maximum relaxation steps of the free phase.
        nudged_steps: Maximum relaxation steps of each nudged phase (warm-started from the free equilibrium).
        mode: Relaxation dynamics, ``"fixed_point"`` or ``"gradient"``.
        tol: Convergence tolerance on the largest state change (0: always run the full number of steps).
        eps: Step size of the gradient dynamics.

    The free phase starts from the net's :meth:`~eqagent.energy.LayeredEnergy.feedforward` sweep unless a warm
    start is given.
    """

    beta: float = 0.5
    symmetric: bool = True
    free_steps: int = 20
    nudged_steps: int = 10
    mode: str = "fixed_point"
    tol: float = 0.0
    eps: float = 0.5

    def __post_init__(self) -> None:
        for name in ("beta", "tol", "eps"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite, got {getattr(self, name)}")
        if not self.beta > 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        if self.free_steps < 0 or self.nudged_steps < 1:
            raise ValueError(
                f"need free_steps >= 0 and nudged_steps >= 1, got {self.free_steps}, {self.nudged_steps}"
            )
        if self.tol < 0 or not self.eps > 0:
            raise ValueError(f"need tol >= 0 and eps > 0, got {self.tol}, {self.eps}")


@dataclass
class EPStep:
    """Result of :func:`ep_gradients`.

    Attributes:
        grads: EP gradient estimate for every trainable parameter of the net and the cost.
        free: The free-phase relaxation.
        nudged: The nudged relaxations (one, or two for symmetric nudging: +β then −β).
        loss: Batch-mean cost at the free equilibrium (a float; computed when first read, so a caller that does
            not read it pays no host sync for it).
        output: ``cost.output`` at the free equilibrium (e.g. logits), detached.
    """

    grads: dict[nn.Parameter, torch.Tensor]
    free: RelaxResult
    nudged_phases: list[RelaxResult] | Callable[[], list[RelaxResult]] = field(default_factory=list)
    loss_value: float | Callable[[], float] = float("nan")
    output: torch.Tensor | None = None

    @property
    def loss(self) -> float:
        if callable(self.loss_value):
            self.loss_value = self.loss_value()
        return self.loss_value

    @property
    def nudged(self) -> list[RelaxResult]:
        """The nudged relaxations (split out of a stacked relaxation on first access)."""
        if callable(self.nudged_phases):
            self.nudged_phases = self.nudged_phases()
        return self.nudged_phases


def free_phase(
    net: LayeredEnergy,
    x: torch.Tensor,
    config: EPConfig | None = None,
    states: Sequence[torch.Tensor] | None = None,
) -> RelaxResult:
    """Clamps the input layer to ``x`` and relaxes the rest (``β = 0``).

    Args:
        net: The energy net.
        x: Input, ``(B, n_0)`` (or ``(M, B, n_0)`` for an ensemble).
        config: Relaxation settings (``free_steps``, ``mode``, ``tol``, ``eps``).
        states: Optional warm start (e.g. the previous equilibrium); its layer 0 is replaced by ``x``.
    """
    cfg = config or EPConfig()
    if states is None:
        init = net.feedforward(x)  # checks the input (the contract of ``feedforward``)
        if cfg.free_steps == 0:  # no relaxation: settle would only check the states
            check_states(init, range(1, len(init)))
            return RelaxResult(states=init, steps=0, converged=False, residual=float("nan"))
    else:
        init = [net.check_layer(l, s, "warm-start state") for l, s in enumerate(states)]
        init[0] = net.check_layer(0, x, "input")
    return settle(net, init, clamped=(0,), steps=cfg.free_steps, mode=cfg.mode, tol=cfg.tol, eps=cfg.eps)


def nudged_phase(
    net: LayeredEnergy,
    cost: Cost,
    free_states: Sequence[torch.Tensor],
    target: torch.Tensor,
    beta: float | torch.Tensor,
    config: EPConfig | None = None,
    checked: bool = False,
) -> RelaxResult:
    """Relaxes ``E + βC`` from the free equilibrium with the input still clamped (``checked``: the states are an
    equilibrium :func:`free_phase` just returned, already checked for NaN/inf and blow-up)."""
    cfg = config or EPConfig()
    return settle(
        net,
        free_states,
        clamped=(0,),
        beta=beta,
        target=target,
        cost=cost,
        steps=cfg.nudged_steps,
        mode=cfg.mode,
        tol=cfg.tol,
        eps=cfg.eps,
        check_start=not checked,
    )


@torch.no_grad()
def ep_gradients(
    net: LayeredEnergy,
    cost: Cost,
    x: torch.Tensor,
    target: torch.Tensor,
    config: EPConfig | None = None,
    states: Sequence[torch.Tensor] | None = None,
) -> EPStep:
    """Runs the free phase and the nudged phase(s) and returns the EP gradient estimate.

    Args:
        net: The energy net.
        cost: The cost on the output layer.
        x: Input batch.
        target: Target batch (format of ``cost``).
        config: :class:`EPConfig`.
        states: Optional warm start for the free phase.

    Raises:
        RelaxationDiverged: a phase diverged, or the estimate is not finite (nothing is returned then).
    """
    cfg = config or EPConfig()
    free = free_phase(net, x, cfg, states)
    s0 = free.states
    target = cost.check_target(target, s0[-1])
    beta = cfg.beta
    if cfg.symmetric and getattr(net, "stack_phases", False):  # +β and −β relaxed as one batch
        b = s0[0].shape[-2]
        signs = row_signs(b, beta, s0[-1])  # (2b, 1): +β for the first half, −β for the second
        both = nudged_phase(
            net, cost, net.stacked(s0, 2), torch.cat([target, target], dim=-2), signs, cfg, True
        )
        grads = net.stacked_grad_diff(both.states, b, 1.0 / (2 * beta))
        out_plus, out_minus = both.states[-1][..., :b, :], both.states[-1][..., b:, :]

        def split() -> list[RelaxResult]:
            halves = [(s[..., :b, :], s[..., b:, :]) for s in both.states[1:]]
            meta = (both.steps, both.converged, both.residual)
            return [RelaxResult([s0[0]] + [h[i] for h in halves], *meta) for i in (0, 1)]

        nudged: list[RelaxResult] | Callable[[], list[RelaxResult]] = split
    else:
        plus = nudged_phase(net, cost, s0, target, beta, cfg, True)
        minus = nudged_phase(net, cost, s0, target, -beta, cfg, True) if cfg.symmetric else None
        nudged = [plus, minus] if cfg.symmetric else [plus]
        out_plus = plus.states[-1]
        out_minus = minus.states[-1] if cfg.symmetric else None
    if cfg.symmetric:
        # (1/2β)[∂F/∂θ(s+, β) − ∂F/∂θ(s−, −β)]: energy part from the state difference, cost part averaged.
        if not getattr(net, "stack_phases", False):
            grads = {
                p: g / (2 * beta) for p, g in net.energy_param_grad_diff(plus.states, minus.states).items()
            }
        cp, cm = cost.param_grads(out_plus, target), cost.param_grads(out_minus, target)
        for p in cp:
            grads[p] = 0.5 * (cp[p] + cm[p])
    else:
        grads = {p: g / beta for p, g in net.energy_param_grad_diff(plus.states, s0).items()}
        grads.update(cost.param_grads(plus.states[-1], target))
    # one check for all, one host sync: the sum of every entry is finite only if each is (an overflowing sum of
    # finite entries, beyond 3e38, is treated as a divergence too)
    if not math.isfinite(float(torch.cat([g.reshape(-1) for g in grads.values()]).sum())):
        raise RelaxationDiverged("EP gradient estimate is not finite; weights left untouched")

    def loss() -> float:
        return float(cost.value(s0[-1], target).mean())

    # lazily only for a cost without parameters (a readout's loss must be read before an optimizer changes it)
    lazy = next(iter(cost.parameters()), None) is None
    return EPStep(
        grads=grads,
        free=free,
        nudged_phases=nudged,
        loss_value=loss if lazy else loss(),
        output=cost.output(s0[-1]).detach(),
    )


def write_grads(grads: dict[nn.Parameter, torch.Tensor], accumulate: bool = False) -> None:
    """Writes an EP estimate into each parameter's ``.grad`` so any ``torch.optim`` optimizer can step."""
    for p, g in grads.items():
        if p.grad is None or not accumulate:
            p.grad = g.detach().clone()
        else:
            p.grad.add_(g)


# ---------------------------------------------------------------------------------------------- gradient check
def _free_mask(
    net: EnergyNet, states: Sequence[torch.Tensor], clamped: set[int], margin: float
) -> list[torch.Tensor]:
    masks = []
    for l, s in enumerate(states):
        if l in clamped:
            masks.append(torch.zeros_like(s))
            continue
        act = net.activations[l]
        m = torch.ones_like(s, dtype=torch.bool)
        if not act.smooth and act.bounded:
            m = (s > act.low + margin) & (s < act.high - margin)
        masks.append(m.to(s.dtype))
    return masks


def true_gradients(
    net: EnergyNet,
    cost: Cost,
    states: Sequence[torch.Tensor],
    target: torch.Tensor,
    cg_iters: int = 1000,
    cg_tol: float = 1e-13,
    margin: float = 1e-9,
) -> dict[nn.Parameter, torch.Tensor]:
    """Exact ``dL/dθ`` at a free equilibrium by implicit differentiation (autograd Hessian-vector products).

    Args:
        net: The energy net.
        cost: Its cost.
        states: A (tightly converged) free equilibrium with the input clamped.
        target: Checked target.
        cg_iters: Conjugate-gradient iteration cap.
        cg_tol: Relative residual at which CG stops.
        margin: Distance from a box bound under which a unit counts as held by the bound.
    """
    params = [p for p in list(net.parameters()) + list(cost.parameters()) if p.requires_grad]
    masks = _free_mask(net, states, {0}, margin)
    s = [t.detach().clone().requires_grad_(True) for t in states]
    with torch.enable_grad():
        energy = net.energy(s).sum()
        g = torch.autograd.grad(energy, s, create_graph=True)
        loss = cost.value(s[-1], target).mean()
        dc_ds = torch.autograd.grad(loss, s, retain_graph=True, allow_unused=True)
        b = [(d if d is not None else torch.zeros_like(t)) * m for d, t, m in zip(dc_ds, s, masks)]

        def hvp(v: list[torch.Tensor]) -> list[torch.Tensor]:
            hv = torch.autograd.grad(g, s, grad_outputs=v, retain_graph=True, allow_unused=True)
            return [(h if h is not None else torch.zeros_like(t)) * m for h, t, m in zip(hv, s, masks)]

        def dot(a: list[torch.Tensor], c: list[torch.Tensor]) -> torch.Tensor:
            return sum((x * y).sum() for x, y in zip(a, c))

        lam = [torch.zeros_like(t) for t in b]
        r = [t.clone() for t in b]
        p = [t.clone() for t in r]
        rr = dot(r, r)
        b_norm = float(rr.sqrt())
        for _ in range(cg_iters):
            if float(rr.sqrt()) <= cg_tol * max(b_norm, 1e-30):
                break
            hp = hvp(p)
            alpha = rr / dot(p, hp)
            lam = [a + alpha * q for a, q in zip(lam, p)]
            r = [a - alpha * q for a, q in zip(r, hp)]
            rr_new = dot(r, r)
            p = [a + (rr_new / rr) * q for a, q in zip(r, p)]
            rr = rr_new
        lam = [t.detach() for t in lam]
        implicit = torch.autograd.grad(dot(g, lam), params, retain_graph=True, allow_unused=True)
        explicit = torch.autograd.grad(loss, params, allow_unused=True)
    out = {}
    for prm, gi, ge in zip(params, implicit, explicit):
        total = torch.zeros_like(prm)
        if ge is not None:
            total = total + ge
        if gi is not None:
            total = total - gi
        out[prm] = total.detach()
    return out


@dataclass
class GradCheckResult:
    """Per-parameter agreement between the EP estimate and the true gradient.

    Attributes:
        cosine: Cosine similarity per parameter name.
        rel_err: ``‖g_EP − g_true‖ / ‖g_true‖`` per parameter name.
        cosine_min: Smallest cosine over parameters.
        rel_err_max: Largest relative error over parameters.
    """

    cosine: dict[str, float]
    rel_err: dict[str, float]

    @property
    def cosine_min(self) -> float:
        return min(self.cosine.values())

    @property
    def rel_err_max(self) -> float:
        return max(self.rel_err.values())


def gradient_check(
    net: EnergyNet,
    cost: Cost,
    x: torch.Tensor,
    target: torch.Tensor,
    beta: float,
    symmetric: bool = True,
    steps: int = 2000,
    tol: float = 1e-12,
    mode: str = "fixed_point",
    eps: float = 0.2,
) -> GradCheckResult:
    """Compares the EP estimate with the exact gradient at the free equilibrium (see :func:`true_gradients`).

    Use float64 nets for a meaningful check. Phases are relaxed to ``tol`` (up to ``steps`` steps).
    """
    cfg = EPConfig(
        beta=beta, symmetric=symmetric, free_steps=steps, nudged_steps=steps, mode=mode, tol=tol, eps=eps
    )
    step = ep_gradients(net, cost, x, target, cfg)
    target_t = cost.check_target(target, step.free.states[-1])
    exact = true_gradients(net, cost, step.free.states, target_t)
    names = {
        p: n for n, p in list(net.named_parameters()) + [("cost." + n, p) for n, p in cost.named_parameters()]
    }
    cos, rel = {}, {}
    for p, g_true in exact.items():
        g_ep = step.grads[p]
        nt = float(g_true.norm())
        if nt == 0.0:
            continue
        cos[names[p]] = float((g_ep * g_true).sum() / (g_ep.norm() * nt).clamp_min(1e-300))
        rel[names[p]] = float((g_ep - g_true).norm() / nt)
    return GradCheckResult(cosine=cos, rel_err=rel)
