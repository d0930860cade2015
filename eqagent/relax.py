"""Relaxation (settling) of an energy net to a minimum of ``F = E + βC``.

:func:`settle` owns the loop (steps, convergence, divergence, no autograd); each energy family
(:class:`eqagent.energy.LayeredEnergy`) supplies one step of its dynamics. One path for every use —
classification, dreaming, world-model prediction and planning differ only in which layers are clamped and
whether the output is nudged. The Hopfield energy has two dynamics:

* ``"gradient"`` — ``s ← Π(s − ε ∂F/∂s)`` for all free layers at once (Scellier & Bengio 2017), ``Π`` the
  projection onto each layer's box. With ``ε`` below ``1/λ_max(∂²F/∂s²)`` the energy decreases monotonically.
* ``"fixed_point"`` — the discrete-time form ``s_l ← ρ(drive_l)`` (Ernoult et al. 2019), applied to odd
  layers, then even layers. For the clipping activations (``hard_sigmoid``, ``hard_tanh``, ``identity``) each
  half-step is the exact minimiser of ``E`` over those layers given the others (layers only talk to their
  neighbours), so this is block-coordinate descent: monotone in ``E``, and it reaches the same equilibria as
  the gradient form, in far fewer steps. The nudged output layer takes ``s_L ← Π(drive_L − β ∂C/∂s_L)``.

Relaxation runs under ``torch.no_grad`` and keeps only the current states: memory does not grow with the
number of steps. Divergence (NaN/inf, or a state beyond ``blowup``) raises :class:`RelaxationDiverged` before anything
is returned.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from eqagent.costs import Cost
from eqagent.energy.base import MODES, Dynamics, LayeredEnergy

__all__ = ["MODES", "RelaxResult", "RelaxationDiverged", "check_states", "settle"]


class RelaxationDiverged(RuntimeError):
    """Raised when a relaxation produces NaN/inf or blows up; no state from it is used anywhere."""


@dataclass
class RelaxResult:
    """Outcome of :func:`settle`.

    Attributes:
        states: Equilibrium states, one tensor per layer (clamped layers as given).
        steps: Relaxation steps taken.
        converged: Whether the largest state change fell below the tolerance.
        residual: Largest absolute state change at the last check (``nan`` if never checked).
    """

    states: list[torch.Tensor]
    steps: int
    converged: bool
    residual: float


def check_states(states: Sequence[torch.Tensor], layers: Iterable[int], blowup: float = 1e6) -> None:
    """Raises :class:`RelaxationDiverged` if a state of ``layers`` is NaN/inf or beyond ``blowup`` (what
    :func:`settle` checks; for states computed without it, e.g. a free phase that is the feed-forward pass)."""
    _check_finite(states, layers, blowup, 0)


def _check_finite(states: Sequence[torch.Tensor], free: Iterable[int], blowup: float, step: int) -> None:
    layers = [l for l in free if states[l].numel()]
    if not layers:
        return
    # every layer's max |s|, one host sync (NaN propagates through amax; torch's CPU inf-norm is several times
    # slower than abs + amax at these sizes)
    norms = torch.stack([states[l].abs().amax() for l in layers])
    if float(norms.max()) <= blowup:
        return
    for l, m in zip(layers, norms.tolist()):  # the error path names the layer
        if not math.isfinite(m):
            raise RelaxationDiverged(f"relaxation diverged at step {step}: layer {l} has NaN/inf states")
        if m > blowup:
            raise RelaxationDiverged(
                f"relaxation diverged at step {step}: layer {l} reached |s|={m:.3g} > {blowup}"
            )


@torch.no_grad()
def settle(
    net: LayeredEnergy,
    states: Sequence[torch.Tensor],
    clamped: Iterable[int] = (0,),
    *,
    beta: float | torch.Tensor = 0.0,
    target: torch.Tensor | None = None,
    cost: Cost | None = None,
    steps: int = 20,
    mode: str = "fixed_point",
    tol: float = 0.0,
    eps: float = 0.5,
    blowup: float = 1e6,
    check_start: bool = True,
) -> RelaxResult:
    """Relaxes ``net`` from ``states`` (a warm start) to a minimum of ``E + β·C``.

    Args:
        net: The energy network.
        states: Initial states, one per layer (``([M,] B, n_l)``); clamped layers keep these values. They are
            copied, never modified.
        clamped: Indices of clamped layers (negative indices allowed).
        beta: Nudging strength (0 for the free phase; negative for the −β phase of symmetric nudging), or a
            tensor of per-sample strengths broadcast against the output (e.g. ``(B, 1)``).
        target: Target of the cost (needed when ``beta != 0``), already checked by ``cost.check_target``.
        cost: Cost acting on the last layer (needed when ``beta != 0``).
        steps: Maximum number of steps ``T``.
        mode: ``"fixed_point"`` or ``"gradient"``.
        tol: Stop when the largest state change in a step is below ``tol`` (0 disables the check).
        eps: Step size of the gradient form.
        blowup: Largest allowed ``|s|`` before the relaxation counts as diverged.
        check_start: Check the initial states and a tensor ``beta`` too (a caller whose states are an equilibrium
            :func:`settle` just returned and whose strengths it built from a checked number, e.g. EP's nudged
            phase starting from the free one, may skip it).

    Returns:
        A :class:`RelaxResult`.

    Raises:
        ValueError: bad arguments (unknown mode, clamping every layer, missing target/cost, ...).
        RelaxationDiverged: NaN/inf or blow-up of the states.
    """
    if mode not in MODES:
        raise ValueError(f"unknown relaxation mode {mode!r}; choose one of {MODES}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    # a tensor of strengths costs a host sync to check: skipped for a vouching caller
    if torch.is_tensor(beta):
        beta_ok = not check_start or bool(torch.isfinite(beta).all())
    else:
        beta_ok = math.isfinite(beta)
    if not (beta_ok and math.isfinite(tol) and math.isfinite(eps)):
        raise ValueError(f"beta, tol and eps must be finite, got {beta}, {tol}, {eps}")
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    n_layers = net.num_layers
    if len(states) != n_layers:
        raise ValueError(f"expected {n_layers} state tensors, got {len(states)}")
    clamp_set = set()
    for l in clamped:
        if not -n_layers <= l < n_layers:
            raise ValueError(f"clamped layer index {l} out of range for {n_layers} layers")
        clamp_set.add(l % n_layers)
    free = [l for l in range(n_layers) if l not in clamp_set]
    if not free:
        raise ValueError("every layer is clamped: nothing to relax")
    last = n_layers - 1
    nudged = torch.is_tensor(beta) or beta != 0.0
    if nudged:
        if cost is None or target is None:
            raise ValueError("a nudged relaxation (beta != 0) needs both cost and target")
        if last in clamp_set:
            raise ValueError("cannot nudge a clamped output layer")
    net.check_mode(mode, free)
    beta = beta if torch.is_tensor(beta) else float(beta)
    dyn = Dynamics(free=tuple(free), mode=mode, beta=beta, cost=cost, target=target, eps=float(eps))
    s = list(states)  # clamped layers are shared, never written; free layers are replaced, not mutated
    for l in free:
        s[l] = net.project(l, s[l])
    if check_start:  # a bad warm start is refused, not relaxed into finite-looking states
        _check_finite(s, free, blowup, 0)
    ctx = net.relax_context(s, clamp_set) if steps else {}
    residual = float("nan")
    converged = False
    t = 0
    for t in range(1, steps + 1):
        new = net.relax_step(s, dyn, ctx)
        if tol > 0:
            delta = max(float((new[l] - s[l]).abs().max()) for l in free)
            _check_finite(new, free, blowup, t)
            residual = delta
        s = new
        if tol > 0 and residual < tol:
            converged = True
            break
    # the final states, unless already checked: with tol > 0 every step was; with no step taken, the start was
    already_checked = (t > 0 and tol > 0) or (t == 0 and check_start)
    if not already_checked:
        _check_finite(s, free, blowup, t)
    return RelaxResult(states=s, steps=t, converged=converged, residual=residual)
