"""Layered energy networks (the Hopfield / Scellier energy).

A network of ``L + 1`` layers with sizes ``(n_0, ..., n_L)`` has state ``s = (s_0, ..., s_L)`` and energy

    E(s) = ½ Σ_l ‖s_l‖² − Σ_l ρ_l(s_l)ᵀ W_l ρ_{l+1}(s_{l+1}) − Σ_l b_lᵀ ρ_l(s_l)

(Scellier & Bengio 2017). The cost ``C`` (see :mod:`eqagent.costs`) acts on the last layer, and the total
energy is ``F = E + βC``. Everything is batched: a state tensor has shape ``(B, n_l)``, or ``(M, B, n_l)`` for an
ensemble of ``M`` members (weights then carry the same leading member dimension).

Activations ``ρ``: ``hard_sigmoid`` (clip to [0, 1], the default), ``hard_tanh`` (clip to [−1, 1]),
``identity``, ``sigmoid`` and ``tanh``. For the clipping activations the state of a layer is kept inside the
clipping box (projected dynamics), where ``ρ(s) = s``: the energy is then a box-constrained quadratic, the
layer-wise minimiser is ``clip(drive)``, and both relaxation forms of :mod:`eqagent.relax` reach the same
equilibria.

The input layer (layer 0) uses ``input_activation`` (``identity`` by default) so that clamped inputs of any
range enter the energy as given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "EnergyNet",
    "EnsembleMLPEnergy",
    "LayeredEnergy",
    "PredictionErrorEnergy",
    "SequentialEnergy",
    "get_activation",
]


@dataclass(frozen=True)
class Activation:
    """An activation ρ with its derivative and the box its states live in.

    Attributes:
        name: Registered name.
        low: Lower end of the state box (``-inf`` if unbounded).
        high: Upper end of the state box (``inf`` if unbounded).
        smooth: False for the clipping family (state kept in the box, ``ρ(s) = s`` inside it).
    """

    name: str
    low: float
    high: float
    smooth: bool

    @property
    def bounded(self) -> bool:
        return math.isfinite(self.low) or math.isfinite(self.high)

    def __call__(self, s: torch.Tensor) -> torch.Tensor:
        if self.name in ("hard_sigmoid", "hard_tanh"):
            return s.clamp(self.low, self.high)
        if self.name == "identity":
            return s
        if self.name == "sigmoid":
            return torch.sigmoid(s)
        if self.name == "tanh":
            return torch.tanh(s)
        raise ValueError(f"unknown activation {self.name!r}")  # pragma: no cover - guarded by get_activation

    def prime(self, s: torch.Tensor) -> torch.Tensor:
        """Derivative ρ'(s). For the clipping family it is 1 inside the closed box (states never leave it)."""
        if self.name in ("hard_sigmoid", "hard_tanh"):
            return ((s >= self.low) & (s <= self.high)).to(s.dtype)
        if self.name == "identity":
            return torch.ones_like(s)
        if self.name == "sigmoid":
            r = torch.sigmoid(s)
            return r * (1 - r)
        if self.name == "tanh":
            return 1 - torch.tanh(s) ** 2
        raise ValueError(f"unknown activation {self.name!r}")  # pragma: no cover

    def project(self, s: torch.Tensor) -> torch.Tensor:
        """Projects a state onto the activation's box (identity for smooth activations)."""
        if self.smooth or not self.bounded:
            return s
        return s.clamp(self.low, self.high)


ACTIVATIONS: dict[str, Activation] = {
    "hard_sigmoid": Activation("hard_sigmoid", 0.0, 1.0, smooth=False),
    "hard_tanh": Activation("hard_tanh", -1.0, 1.0, smooth=False),
    "identity": Activation("identity", -math.inf, math.inf, smooth=False),
    "sigmoid": Activation("sigmoid", -math.inf, math.inf, smooth=True),
    "tanh": Activation("tanh", -math.inf, math.inf, smooth=True),
}


def get_activation(name: str | Activation) -> Activation:
    """Returns the :class:`Activation` called ``name`` (raises ``ValueError`` naming the choices)."""
    if isinstance(name, Activation):
        return name
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}") from None


def _addmm(c: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``c + a @ b`` in one kernel (``addmm``/``baddbmm``), broadcasting ``b`` over an ensemble dimension."""
    if a.dim() == 2 and b.dim() == 2:
        return torch.addmm(c, a, b)
    if a.dim() == 3 and b.dim() == 3 and c.dim() == 3:
        return torch.baddbmm(c, a, b)
    return c + a @ b


def _addmm_(c: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """In place ``c += a @ b``."""
    if a.dim() == 2 and b.dim() == 2:
        c.addmm_(a, b)
    elif a.dim() == 3 and b.dim() == 3:
        c.baddbmm_(a, b)
    else:
        c.add_(a @ b)


class LayeredEnergy(nn.Module):
    """Abstract base of the energy families that :func:`eqagent.relax.settle` relaxes.

    Contract (states are lists with one tensor per layer, ``([M,] B, n_l)``-shaped for dense layers):

    * ``num_layers`` — number of layers, input included.
    * ``check_layer(l, value, what)`` — validate/convert a clamp or warm-start value for layer ``l``; raise
      ``ValueError`` naming the problem (shape, NaN/inf).
    * ``feedforward(x)`` — states of a bottom-up sweep from input ``x`` (a warm start).
    * ``energy(states)`` — per-sample energy ``E(s)``.
    * ``project(l, s)`` — project a state of layer ``l`` onto its admissible set.
    * ``relax_context(states, clamped)`` — precompute what stays constant while the clamped layers are fixed.
    * ``relax_step(states, free, ctx, mode, beta, cost, target, eps)`` — one step of the dynamics of
      ``F = E + βC`` (``mode`` ``"fixed_point"`` or ``"gradient"``); returns the new states (clamped ones as given,
      never mutated in place).
    * ``check_mode(mode, free)`` — raise ``ValueError`` if ``mode`` is not valid for these free layers.
    * ``energy_param_grad_diff(a, b)`` — ``∂E/∂θ(a) − ∂E/∂θ(b)`` batch-averaged, closed form (the local rule).
    """

    num_layers: int

    def check_layer(self, l: int, value: torch.Tensor, what: str = "state") -> torch.Tensor:
        raise NotImplementedError

    def feedforward(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def energy(self, states: Sequence[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def project(self, l: int, s: torch.Tensor) -> torch.Tensor:
        return s

    def zero_states(self, batch: int) -> list[torch.Tensor]:
        """All-zero states ``(B, n_l)`` projected onto each layer's admissible set (a cold start)."""
        p = next(self.parameters())
        return [
            self.project(l, torch.zeros(batch, n, dtype=p.dtype, device=p.device))
            for l, n in enumerate(self.sizes)
        ]

    def check_mode(self, mode: str, free: Sequence[int]) -> None:
        return None

    def relax_context(self, states: Sequence[torch.Tensor], clamped: set[int]) -> object:
        return None

    def relax_step(self, states, free, ctx, mode, beta, cost, target, eps) -> list[torch.Tensor]:
        raise NotImplementedError

    def relax_run(self, states, free, ctx, mode, beta, cost, target, steps) -> list[torch.Tensor] | None:
        """Optionally runs all ``steps`` steps at once (a fused kernel); ``None`` lets ``settle`` step."""
        return None

    def energy_param_grad_diff(
        self, a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]
    ) -> dict[nn.Parameter, torch.Tensor]:
        raise NotImplementedError


class EnergyNet(LayeredEnergy):
    """A layered Hopfield energy network (Scellier & Bengio 2017), optionally an ensemble.

    Args:
        sizes: Layer sizes ``(n_0, ..., n_L)``, at least two layers.
        activation: ρ of the layers 1..L (name from :data:`ACTIVATIONS`).
        input_activation: ρ of layer 0.
        members: Ensemble size ``M``; ``None`` for a single net (no member dimension).
        input_bias: Whether layer 0 has a bias (useful when the input is left free, e.g. for dreaming).
        init_gain: Scale of the Glorot-uniform weight initialisation.
        generator: Optional ``torch.Generator`` for a reproducible initialisation.
        dtype: Parameter dtype.
        device: Parameter device.

    The parameters are ``weights[l]`` of shape ``([M,] n_l, n_{l+1})`` and ``biases[l]`` of shape
    ``([M,] n_l)``; ``biases[0]`` is a zero buffer-like parameter without gradient when ``input_bias`` is False.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        activation: str | Activation = "hard_sigmoid",
        input_activation: str | Activation = "identity",
        members: int | None = None,
        input_bias: bool = False,
        init_gain: float = 1.0,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        sizes = [int(n) for n in sizes]
        if len(sizes) < 2:
            raise ValueError(f"an energy net needs at least 2 layers, got sizes={sizes}")
        if any(n <= 0 for n in sizes):
            raise ValueError(f"layer sizes must be positive, got sizes={sizes}")
        if members is not None and int(members) < 1:
            raise ValueError(f"members must be >= 1 or None, got {members}")
        if not init_gain > 0:
            raise ValueError(f"init_gain must be > 0, got {init_gain}")
        self.sizes = sizes
        self.members = None if members is None else int(members)
        self.input_bias = bool(input_bias)
        act = get_activation(activation)
        self.activations: list[Activation] = [get_activation(input_activation)] + [act] * (len(sizes) - 1)
        lead = () if self.members is None else (self.members,)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            bound = init_gain * math.sqrt(6.0 / (n_in + n_out))
            w = (torch.rand((*lead, n_in, n_out), generator=generator, dtype=dtype) * 2 - 1) * bound
            self.weights.append(nn.Parameter(w.to(device)))
        for i, n in enumerate(sizes):
            b = nn.Parameter(torch.zeros((*lead, n), dtype=dtype, device=device))
            if i == 0 and not self.input_bias:
                b.requires_grad_(False)
            self.biases.append(b)

    # ------------------------------------------------------------------ basics
    @property
    def num_layers(self) -> int:
        """Number of layers ``L + 1`` (input included)."""
        return len(self.sizes)

    def project(self, l: int, s: torch.Tensor) -> torch.Tensor:
        return self.activations[l].project(s)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters that EP learns (weights, biases with ``requires_grad``)."""
        return [p for p in self.parameters() if p.requires_grad]

    def _lead_shape(self, batch: int) -> tuple[int, ...]:
        return (batch,) if self.members is None else (self.members, batch)

    def check_layer(self, l: int, value: torch.Tensor, what: str = "state") -> torch.Tensor:
        """Validates ``value`` for layer ``l`` and broadcasts it over the ensemble dimension.

        Raises:
            ValueError: wrong shape, or NaN/inf entries.
        """
        n = self.sizes[l]
        if value.dim() == 1:
            value = value.unsqueeze(0)
        if value.shape[-1] != n:
            raise ValueError(
                f"{what} for layer {l} must have last dimension {n}, got shape {tuple(value.shape)}"
            )
        if self.members is None:
            if value.dim() != 2:
                raise ValueError(f"{what} for layer {l} must be (B, {n}), got shape {tuple(value.shape)}")
        else:
            if value.dim() == 2:
                value = value.unsqueeze(0).expand(self.members, *value.shape)
            elif value.dim() != 3 or value.shape[0] != self.members:
                raise ValueError(
                    f"{what} for layer {l} must be (B, {n}) or ({self.members}, B, {n}), got {tuple(value.shape)}"
                )
        if not torch.isfinite(value).all():
            raise ValueError(f"{what} for layer {l} contains NaN or inf")
        p = self.weights[0]
        return value.to(device=p.device, dtype=p.dtype)

    def rho(self, l: int, s: torch.Tensor) -> torch.Tensor:
        return self.activations[l](s)

    # ------------------------------------------------------------------ states
    def zero_states(self, batch: int) -> list[torch.Tensor]:
        """All-zero states (projected into each layer's box)."""
        p = self.weights[0]
        lead = self._lead_shape(batch)
        return [
            self.activations[l].project(torch.zeros((*lead, n), dtype=p.dtype, device=p.device))
            for l, n in enumerate(self.sizes)
        ]

    @torch.no_grad()
    def feedforward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """A bottom-up sweep ``s_{l+1} = ρ(ρ(s_l) W_l + b_{l+1})`` (projected): a cheap warm start."""
        s0 = self.check_layer(0, x, "input")
        states = [s0]
        for l, w in enumerate(self.weights):
            h = self.rho(l, states[-1]) @ w + self.biases[l + 1].unsqueeze(-2)
            states.append(self.activations[l + 1].project(h))
        return states

    # ------------------------------------------------------------------ energy
    def drive(self, states: Sequence[torch.Tensor], l: int) -> torch.Tensor:
        """Input to layer ``l`` from its neighbours: ``ρ(s_{l−1}) W_{l−1} + ρ(s_{l+1}) W_lᵀ + b_l``."""
        d = self.biases[l].unsqueeze(-2).expand_as(states[l])
        if l > 0:
            d = d + self.rho(l - 1, states[l - 1]) @ self.weights[l - 1]
        if l < self.num_layers - 1:
            d = d + self.rho(l + 1, states[l + 1]) @ self.weights[l].transpose(-1, -2)
        return d

    def energy(self, states: Sequence[torch.Tensor]) -> torch.Tensor:
        """Per-sample energy ``E(s)``, shape ``([M,] B)``."""
        e = sum(0.5 * (s**2).sum(-1) for s in states)
        rhos = [self.rho(l, s) for l, s in enumerate(states)]
        for l, w in enumerate(self.weights):
            e = e - ((rhos[l] @ w) * rhos[l + 1]).sum(-1)
        for l, b in enumerate(self.biases):
            e = e - (rhos[l] * b.unsqueeze(-2)).sum(-1)
        return e

    def grad_state(self, states: Sequence[torch.Tensor], l: int) -> torch.Tensor:
        """``∂E/∂s_l = s_l − ρ'(s_l) ⊙ drive_l``."""
        return states[l] - self.activations[l].prime(states[l]) * self.drive(states, l)

    # ------------------------------------------------------------------ dynamics (see eqagent.relax)
    def check_mode(self, mode: str, free: Sequence[int]) -> None:
        if mode == "fixed_point":
            bad = sorted({self.activations[l].name for l in free if self.activations[l].smooth})
            if bad:
                raise ValueError(
                    "fixed_point relaxation needs clipping activations (hard_sigmoid, hard_tanh, identity); "
                    f"free layers use {bad}: use mode='gradient'"
                )

    relax_backend: str = "auto"
    """``"auto"`` (Triton fused step for CUDA tensors when triton is importable, torch otherwise), ``"torch"``, or
    ``"triton"`` (forced; on CPU it needs ``TRITON_INTERPRET=1``, as in the tests)."""

    def _backend(self, states: Sequence[torch.Tensor]) -> str:
        if self.relax_backend == "torch":
            return "torch"
        if self.relax_backend == "auto" and states[0].device.type != "cuda":
            return "torch"
        from eqagent.kernels import triton_relax

        if triton_relax.available(states[0].device):
            return "triton"
        if self.relax_backend == "triton":
            raise RuntimeError(
                "relax_backend='triton' but Triton cannot run here (no CUDA, no TRITON_INTERPRET=1)"
            )
        return "torch"

    def relax_context(self, states: Sequence[torch.Tensor], clamped: set[int]) -> dict:
        """The clamped set and the backend; the constant drives are built on first use (see :meth:`_const`)."""
        return {"clamped": clamped, "backend": self._backend(states)}

    def _const(self, states: Sequence[torch.Tensor], ctx: dict) -> dict[int, torch.Tensor]:
        """Drive from the bias and the clamped neighbours: constant while relaxing, built once per relaxation.

        Each is a ``(…, B, n_l)`` view of feature-major storage (the bias broadcast over the batch when no
        neighbour is clamped), so the feature-major fixed-point step reads it contiguously and the other steps as
        an ordinary batch-major tensor; nothing writes into it.
        """
        const = ctx.get("const")
        if const is not None:
            return const
        clamped, last = ctx["clamped"], self.num_layers - 1
        const = {}
        for l in range(self.num_layers):
            if l in clamped:
                continue
            c = self.biases[l].detach().unsqueeze(-1)  # (…, n_l, 1)
            if l > 0 and (l - 1) in clamped:
                w = self.weights[l - 1].detach().transpose(-1, -2)
                c = _addmm(c, w, self.rho(l - 1, states[l - 1]).transpose(-1, -2))  # (…, n_l, B)
            if l < last and (l + 1) in clamped:
                c = _addmm(c, self.weights[l].detach(), self.rho(l + 1, states[l + 1]).transpose(-1, -2))
            const[l] = c.transpose(-1, -2).expand_as(states[l])
        ctx["const"] = const
        return const

    def _ctx_drive(self, s: Sequence[torch.Tensor], l: int, ctx: dict) -> torch.Tensor:
        """Drive of layer ``l``: ``const + ρ(s_{l−1}) W_{l−1} + ρ(s_{l+1}) W_lᵀ`` with fused multiply-adds."""
        d, clamped, last = self._const(s, ctx)[l], ctx["clamped"], self.num_layers - 1
        fresh = False
        if l > 0 and (l - 1) not in clamped:
            d = _addmm(d, self.rho(l - 1, s[l - 1]), self.weights[l - 1])
            fresh = True
        if l < last and (l + 1) not in clamped:
            w_t = self.weights[l].transpose(-1, -2)
            if fresh:
                _addmm_(d, self.rho(l + 1, s[l + 1]), w_t)
            else:
                d = _addmm(d, self.rho(l + 1, s[l + 1]), w_t)
        return d

    def relax_step(self, states, free, ctx, mode, beta, cost, target, eps) -> list[torch.Tensor]:
        """One step: fixed-point (odd layers, then even layers, each ``s_l ← Π(drive_l)``) or gradient."""
        s = list(states)
        last = self.num_layers - 1
        if (
            mode == "fixed_point"
            and ctx["backend"] == "triton"
            and (beta == 0.0 or type(cost).__name__ == "MSECost")
        ):
            from eqagent.kernels.triton_relax import fused_layer_update

            clamped = ctx["clamped"]
            for l in [l for l in free if l % 2 == 1] + [l for l in free if l % 2 == 0]:
                lo = l > 0 and (l - 1) not in clamped
                hi = l < last and (l + 1) not in clamped
                act = self.activations[l]
                nudge = beta != 0.0 and l == last
                s[l] = fused_layer_update(
                    self._const(s, ctx)[l],
                    s[l - 1] if lo else None,  # ρ(s) = s on the box of the clipping activations
                    self.weights[l - 1] if lo else None,
                    s[l + 1] if hi else None,
                    self.weights[l] if hi else None,
                    act.low,
                    act.high,
                    state=s[l] if nudge else None,
                    target=target if nudge else None,
                    beta=beta if nudge else 0.0,
                )
            return s
        if mode == "fixed_point":
            return self._fixed_point_step_t(s, free, ctx, beta, cost, target)
        grads = {}
        for l in free:
            g = s[l] - self.activations[l].prime(s[l]) * self._ctx_drive(s, l, ctx)
            if beta != 0.0 and l == last:
                g = g + beta * cost.grad_state(s[l], target)
            grads[l] = g
        for l in free:
            s[l] = self.activations[l].project(s[l] - eps * grads[l])
        return s

    def relax_run(self, states, free, ctx, mode, beta, cost, target, steps) -> list[torch.Tensor] | None:
        """All steps in one Triton launch (states kept on chip) when the net is small enough: the free layers are
        a chain of 2–3 layers right after the clamped input (any layers above them clamped), each ≤ 128 wide,
        fixed-point mode, free or MSE-nudged. Otherwise ``None`` (``settle`` steps one layer update at a time)."""
        if mode != "fixed_point" or ctx["backend"] != "triton" or steps < 1:
            return None
        if beta != 0.0 and type(cost).__name__ != "MSECost":
            return None
        from eqagent.kernels import triton_relax

        k = len(free)
        if list(free) != list(range(1, k + 1)) or not triton_relax.persistent_supported(
            [self.sizes[l] for l in free]
        ):
            return None
        s = list(states)
        const = self._const(s, ctx)
        act = self.activations[1]
        out = triton_relax.persistent_relax(
            [const[l] for l in free],
            [s[l] for l in free],
            [self.weights[l] for l in free[:-1]],
            act.low,
            act.high,
            steps,
            target=target if beta != 0.0 else None,
            beta=beta,
        )
        for l, v in zip(free, out):
            s[l] = v
        return s

    def _upward_weights(self, ctx: dict) -> dict[int, torch.Tensor]:
        """``W_lᵀ`` made contiguous for every coupling between two free layers (the bottom-up product of the
        feature-major step), built once per relaxation."""
        up = ctx.get("up")
        if up is None:
            clamped = ctx["clamped"]
            up = ctx["up"] = {
                l: w.detach().transpose(-1, -2).contiguous()
                for l, w in enumerate(self.weights)
                if l not in clamped and (l + 1) not in clamped
            }
        return up

    def _fixed_point_step_t(self, s, free, ctx, beta, cost, target) -> list[torch.Tensor]:
        """One fixed-point step computed feature-major: ``s_lᵀ ← Π(c_l + W_{l−1}ᵀ s_{l−1}ᵀ + W_l s_{l+1}ᵀ)``.

        Same arithmetic as ``s_l ← Π(drive_l)``; the products are laid out as ``(n_l, B)`` so that thin layers
        (a 10-unit output, a 7-unit world-model head) make wide matrix products, and the new states are written
        in place of the fresh products (a free neighbour is in its box, where ``ρ(s) = s``). The returned states
        are ``(…, B, n_l)`` views of feature-major storage.
        """
        up, const, clamped = self._upward_weights(ctx), self._const(s, ctx), ctx["clamped"]
        last = self.num_layers - 1
        for l in [l for l in free if l % 2 == 1] + [l for l in free if l % 2 == 0]:
            d, fresh = const[l].transpose(-1, -2), False  # (…, n_l, B)
            if l > 0 and (l - 1) not in clamped:
                d, fresh = _addmm(d, up[l - 1], s[l - 1].transpose(-1, -2)), True
            if l < last and (l + 1) not in clamped:
                down = self.weights[l].detach()
                if fresh:
                    _addmm_(d, down, s[l + 1].transpose(-1, -2))
                else:
                    d, fresh = _addmm(d, down, s[l + 1].transpose(-1, -2)), True
            if not fresh:
                d = d.clone()
            if beta != 0.0 and l == last:
                d.sub_(cost.grad_state(s[l], target).transpose(-1, -2), alpha=beta)
            act = self.activations[l]
            if act.bounded:
                d.clamp_(act.low, act.high)
            s[l] = d.transpose(-1, -2)
        return s

    def energy_param_grads(self, states: Sequence[torch.Tensor]) -> dict[nn.Parameter, torch.Tensor]:
        """Closed-form ``∂E/∂θ`` averaged over the batch (the local terms of the EP rule).

        ``∂E/∂W_l = −mean_b ρ(s_l)ᵀ ρ(s_{l+1})`` and ``∂E/∂b_l = −mean_b ρ(s_l)``. No autograd graph is built.
        """
        rhos = [self.rho(l, s) for l, s in enumerate(states)]
        batch = states[0].shape[-2]
        out: dict[nn.Parameter, torch.Tensor] = {}
        for l, w in enumerate(self.weights):
            out[w] = -(rhos[l].transpose(-1, -2) @ rhos[l + 1]) / batch
        for l, b in enumerate(self.biases):
            if b.requires_grad:
                out[b] = -rhos[l].mean(-2)
        return out

    def energy_param_grad_diff(
        self, a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]
    ) -> dict[nn.Parameter, torch.Tensor]:
        """``∂E/∂θ(a) − ∂E/∂θ(b)`` for two states of the same batch, in as few matmuls as possible.

        Uses ``pᵀq − uᵀv = ½[(p−u)ᵀ(q+v) + (p+u)ᵀ(q−v)]``; a layer given as the *same tensor* in ``a`` and ``b``
        (a clamped layer) makes its half vanish, so a clamped input costs one matmul instead of two.
        """
        batch = a[0].shape[-2]
        ra = [self.rho(l, s) for l, s in enumerate(a)]
        rb = [ra[l] if a[l] is b[l] else self.rho(l, s) for l, s in enumerate(b)]
        out: dict[nn.Parameter, torch.Tensor] = {}
        for l, w in enumerate(self.weights):
            same_lo, same_hi = a[l] is b[l], a[l + 1] is b[l + 1]
            if same_lo and same_hi:
                g = torch.zeros_like(w)
            elif same_lo:
                g = ra[l].transpose(-1, -2) @ (ra[l + 1] - rb[l + 1])
            elif same_hi:
                g = (ra[l] - rb[l]).transpose(-1, -2) @ ra[l + 1]
            else:
                g = 0.5 * (
                    (ra[l] - rb[l]).transpose(-1, -2) @ (ra[l + 1] + rb[l + 1])
                    + (ra[l] + rb[l]).transpose(-1, -2) @ (ra[l + 1] - rb[l + 1])
                )
            out[w] = -g / batch
        for l, bias in enumerate(self.biases):
            if bias.requires_grad:
                out[bias] = torch.zeros_like(bias) if a[l] is b[l] else -(ra[l] - rb[l]).mean(-2)
        return out

    def extra_repr(self) -> str:
        acts = [a.name for a in self.activations]
        return f"sizes={self.sizes}, activations={acts}, members={self.members}"


# ---------------------------------------------------------------------------------------------------------------
# The layer-wise prediction-error energy
_ELEMENTWISE = (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.Hardtanh, nn.Identity)
_SUPPORTED = "Linear, Flatten, ReLU, Tanh, Sigmoid, Hardtanh, Identity"


def _act_and_prime(mods: Sequence[nn.Module], z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Applies a chain of elementwise activations to ``z``; returns the output and the chain's derivative."""
    d = torch.ones_like(z)
    for m in mods:
        if isinstance(m, nn.ReLU):
            d = d * (z > 0).to(z.dtype)
            z = torch.relu(z)
        elif isinstance(m, nn.Tanh):
            z = torch.tanh(z)
            d = d * (1 - z * z)
        elif isinstance(m, nn.Sigmoid):
            z = torch.sigmoid(z)
            d = d * z * (1 - z)
        elif isinstance(m, nn.Hardtanh):
            d = d * ((z > m.min_val) & (z < m.max_val)).to(z.dtype)
            z = z.clamp(m.min_val, m.max_val)
    return z, d


class PredictionErrorEnergy(LayeredEnergy):
    """Base of the layer-wise prediction-error energies ``E(s) = Σ_l ½‖s_l − f_l(s_{l−1})‖²``.

    ``f_l(s) = act_l(s A_l + b_l)`` with ``A_l`` of shape ``([M,] n_{l−1}, n_l)``. The free equilibrium (input
    clamped, ``β = 0``) is exactly the feed-forward pass: the free phase costs one pass and only the nudged
    phases relax. Subclasses provide ``sizes``, ``check_layer`` and the four layer accessors
    ``_in_out(l)`` (``A_l``), ``_bias(l)`` (``b_l`` or ``None``), ``_activate(l, pre)`` (output and derivative)
    and ``_param_grads(l, g_in_out, g_bias)`` (map gradients of ``A_l``/``b_l`` to the real parameters).

    Dynamics of ``F = E + βC`` (input clamped):

    * ``"fixed_point"`` — from the current states, the top-down error messages ``ẽ_L = −β ∂C/∂s_L``,
      ``ẽ_l = J_{l+1}(s_l)ᵀ ẽ_{l+1}`` (each layer hears only its upper neighbour, through the same weights), then
      the bottom-up states ``s_l = f_l(s_{l−1}) + ẽ_l``. Its fixed points are exactly the stationary points of
      ``F`` (``e_L = −β∂C/∂s_L``, ``e_l = J_{l+1}ᵀe_{l+1}``) and it contracts fast for small β.
    * ``"gradient"`` — ``s_l ← s_l − ε[(s_l − f_l) − J_{l+1}ᵀ(s_{l+1} − f_{l+1}) + β∂C/∂s_L]``.

    The local rule: ``∂E/∂A_l = −mean_b s_{l−1}ᵀ(e_l ⊙ f_l')``, ``∂E/∂b_l = −mean_b e_l ⊙ f_l'``.
    """

    sizes: list[int]

    def _in_out(self, l: int) -> torch.Tensor:
        raise NotImplementedError

    def _bias(self, l: int) -> torch.Tensor | None:
        raise NotImplementedError

    def _activate(self, l: int, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _param_grads(
        self, l: int, g_in_out: torch.Tensor, g_bias: torch.Tensor
    ) -> dict[nn.Parameter, torch.Tensor]:
        raise NotImplementedError

    @property
    def num_layers(self) -> int:
        return len(self.sizes)

    def _f(self, l: int, below: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``f_l(s_{l−1})`` and its activation derivative at the pre-activation."""
        pre = below @ self._in_out(l)
        b = self._bias(l)
        if b is not None:
            pre = pre + b.unsqueeze(-2)
        return self._activate(l, pre)

    def _f1(self, s0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``f_1(s_0)``, cached for the same input tensor and unchanged first-layer parameters.

        The input is clamped in every phase of an EP step, so the first layer's matmul is done once per step.
        """
        a, b = self._in_out(1), self._bias(1)
        key = (id(s0), s0._version, id(a), a._version, None if b is None else b._version)
        cached = getattr(self, "_f1_cache", None)
        if cached is not None and cached[0] == key and cached[1] is s0:
            return cached[2]
        out = self._f(1, s0)
        self._f1_cache = (key, s0, out)
        return out

    def _fl(self, l: int, states: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self._f1(states[0]) if l == 1 else self._f(l, states[l - 1])

    @torch.no_grad()
    def feedforward(self, x: torch.Tensor) -> list[torch.Tensor]:
        states = [self.check_layer(0, x, "input")]
        for l in range(1, self.num_layers):
            states.append(self._fl(l, states)[0])
        return states

    def errors(self, states: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Prediction errors ``e_l = s_l − f_l(s_{l−1})`` and derivatives ``f_l'`` (index 0 unused)."""
        es, ds = [torch.zeros(0)], [torch.zeros(0)]
        for l in range(1, self.num_layers):
            f, d = self._fl(l, states)
            es.append(states[l] - f)
            ds.append(d)
        return es, ds

    def energy(self, states: Sequence[torch.Tensor]) -> torch.Tensor:
        es, _ = self.errors(states)
        return sum(0.5 * (e**2).sum(-1) for e in es[1:])

    def check_mode(self, mode: str, free: Sequence[int]) -> None:
        if list(free) != list(range(1, self.num_layers)):
            raise ValueError(f"{type(self).__name__} relaxes with exactly the input layer clamped")

    def relax_context(self, states: Sequence[torch.Tensor], clamped: set[int]) -> dict:
        return {"f1": self._f1(states[0])}  # the input is clamped: f_1(s_0) is constant

    def relax_step(self, states, free, ctx, mode, beta, cost, target, eps) -> list[torch.Tensor]:
        L = self.num_layers - 1
        fs = [None, ctx["f1"]] + [self._f(l, states[l - 1]) for l in range(2, L + 1)]
        s = list(states)
        if mode == "fixed_point":
            msg = [None] * (L + 1)
            msg[L] = (
                -beta * cost.grad_state(states[L], target) if beta != 0.0 else torch.zeros_like(states[L])
            )
            for l in range(L - 1, 0, -1):
                msg[l] = (msg[l + 1] * fs[l + 1][1]) @ self._in_out(l + 1).transpose(-1, -2)
            s[1] = fs[1][0] + msg[1]
            for l in range(2, L + 1):
                s[l] = self._f(l, s[l - 1])[0] + msg[l]
            return s
        es = [None] + [states[l] - fs[l][0] for l in range(1, L + 1)]
        for l in range(1, L + 1):
            g = es[l]
            if l < L:
                g = g - (es[l + 1] * fs[l + 1][1]) @ self._in_out(l + 1).transpose(-1, -2)
            elif beta != 0.0:
                g = g + beta * cost.grad_state(states[L], target)
            s[l] = states[l] - eps * g
        return s

    def energy_param_grad_diff(
        self, a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]
    ) -> dict[nn.Parameter, torch.Tensor]:
        batch = a[0].shape[-2]
        ea, da = self.errors(a)
        eb, db = ea, da
        if any(x is not y for x, y in zip(a, b)):
            eb, db = self.errors(b)
        out: dict[nn.Parameter, torch.Tensor] = {}
        for l in range(1, self.num_layers):
            ga, gb = ea[l] * da[l], eb[l] * db[l]
            if a[l - 1] is b[l - 1]:
                gw = a[l - 1].transpose(-1, -2) @ (ga - gb)
            else:
                gw = a[l - 1].transpose(-1, -2) @ ga - b[l - 1].transpose(-1, -2) @ gb
            out.update(self._param_grads(l, -gw / batch, -(ga - gb).mean(-2)))
        return out


class SequentialEnergy(PredictionErrorEnergy):
    """The prediction-error energy of an ``nn.Sequential`` (see :class:`PredictionErrorEnergy`).

    ``f_l`` is the model's ``l``-th ``Linear`` followed by its elementwise activations; leading ``Flatten`` modules
    turn the input into ``s_0``. The free equilibrium is the forward pass, so ``model(x)`` is what EP trains.
    Supported modules: Linear, Flatten, ReLU, Tanh, Sigmoid, Hardtanh, Identity; anything else raises
    ``ValueError`` naming the module.
    """

    def __init__(self, model: nn.Sequential) -> None:
        super().__init__()
        if not isinstance(model, nn.Sequential):
            raise TypeError(f"SequentialEnergy needs an nn.Sequential, got {type(model).__name__}")
        self.model = model
        self.prefix: list[nn.Module] = []
        self.linears: list[nn.Linear] = []
        self.acts: list[list[nn.Module]] = []
        for name, m in model.named_children():
            if isinstance(m, nn.Flatten):
                if self.linears:
                    continue  # a Flatten after the first Linear sees 2-D states: a no-op
                self.prefix.append(m)
            elif isinstance(m, nn.Linear):
                self.linears.append(m)
                self.acts.append([])
            elif isinstance(m, _ELEMENTWISE):
                if not self.linears:
                    raise ValueError(
                        f"module {name} ({type(m).__name__}) before the first Linear is not supported"
                    )
                self.acts[-1].append(m)
            else:
                raise ValueError(
                    f"module {name} ({type(m).__name__}) is not supported by the EP energy; supported: {_SUPPORTED}"
                )
        if not self.linears:
            raise ValueError("the model has no Linear layer to train")
        self.sizes = [self.linears[0].in_features] + [lin.out_features for lin in self.linears]
        for i, (lin, n_in) in enumerate(zip(self.linears, self.sizes[:-1])):
            if lin.in_features != n_in:
                raise ValueError(
                    f"Linear {i} expects {lin.in_features} inputs but the layer below has {n_in}"
                )

    def check_layer(self, l: int, value: torch.Tensor, what: str = "state") -> torch.Tensor:
        p = self.linears[0].weight
        value = torch.as_tensor(value).to(device=p.device, dtype=p.dtype)
        if l == 0:
            for m in self.prefix:
                value = m(value)
        if value.dim() == 1:
            value = value.unsqueeze(0)
        if value.dim() != 2 or value.shape[-1] != self.sizes[l]:
            raise ValueError(
                f"{what} for layer {l} must be (B, {self.sizes[l]}) after the model's Flatten, got {tuple(value.shape)}"
            )
        if not torch.isfinite(value).all():
            raise ValueError(f"{what} for layer {l} contains NaN or inf")
        return value

    def _in_out(self, l: int) -> torch.Tensor:
        return self.linears[l - 1].weight.T

    def _bias(self, l: int) -> torch.Tensor | None:
        return self.linears[l - 1].bias

    def _activate(self, l: int, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _act_and_prime(self.acts[l - 1], pre)

    def _param_grads(self, l, g_in_out, g_bias):
        lin = self.linears[l - 1]
        out = {lin.weight: g_in_out.T}
        if lin.bias is not None:
            out[lin.bias] = g_bias
        return out


class EnsembleMLPEnergy(PredictionErrorEnergy):
    """An ensemble of ``M`` MLPs as one batched prediction-error energy (weights ``(M, n_in, n_out)``).

    Hidden layers use ``activation`` (``tanh``, ``relu`` or ``sigmoid``); the output is linear.
    States are ``(M, B, n_l)``; an input ``(B, n_0)`` is shared by all members, ``(M, B, n_0)`` gives each
    member its own batch (bootstrapped training).

    Args:
        sizes: Layer sizes, input first.
        members: Ensemble size ``M``.
        activation: Hidden activation.
        generator: Generator for a reproducible initialisation (PyTorch's ``Linear`` default scale).
    """

    _ACTS: ClassVar[dict] = {"tanh": nn.Tanh, "relu": nn.ReLU, "sigmoid": nn.Sigmoid}

    def __init__(
        self,
        sizes: Sequence[int],
        members: int = 5,
        activation: str = "tanh",
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        sizes = [int(n) for n in sizes]
        if len(sizes) < 2 or any(n <= 0 for n in sizes):
            raise ValueError(f"sizes must list at least 2 positive layer sizes, got {sizes}")
        if members < 1:
            raise ValueError(f"members must be >= 1, got {members}")
        if activation not in self._ACTS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(self._ACTS)}")
        self.sizes, self.members, self.activation = sizes, int(members), activation
        self._act = [self._ACTS[activation]()]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            bound = 1.0 / math.sqrt(n_in)
            w = (torch.rand(members, n_in, n_out, generator=generator, dtype=dtype) * 2 - 1) * bound
            b = (torch.rand(members, n_out, generator=generator, dtype=dtype) * 2 - 1) * bound
            self.weights.append(nn.Parameter(w.to(device)))
            self.biases.append(nn.Parameter(b.to(device)))

    def check_layer(self, l: int, value: torch.Tensor, what: str = "state") -> torch.Tensor:
        p = self.weights[0]
        value = torch.as_tensor(value).to(device=p.device, dtype=p.dtype)
        n = self.sizes[l]
        if value.dim() == 1:
            value = value.unsqueeze(0)
        if value.dim() == 2:
            value = value.unsqueeze(0).expand(self.members, *value.shape)
        if value.dim() != 3 or value.shape[0] != self.members or value.shape[-1] != n:
            raise ValueError(
                f"{what} for layer {l} must be (B, {n}) or ({self.members}, B, {n}), got {tuple(value.shape)}"
            )
        if not torch.isfinite(value).all():
            raise ValueError(f"{what} for layer {l} contains NaN or inf")
        return value

    def _in_out(self, l: int) -> torch.Tensor:
        return self.weights[l - 1]

    def _bias(self, l: int) -> torch.Tensor | None:
        return self.biases[l - 1]

    def _activate(self, l: int, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if l == self.num_layers - 1:
            return pre, torch.ones_like(pre)
        return _act_and_prime(self._act, pre)

    def _param_grads(self, l, g_in_out, g_bias):
        return {self.weights[l - 1]: g_in_out, self.biases[l - 1]: g_bias}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Output of every member (the free equilibrium's last layer), ``(M, B, n_L)``; differentiable.

        The feed-forward pass without the activation derivatives that relaxation needs (cheap enough to plan with).
        """
        h = self.check_layer(0, x, "input")
        last = self.num_layers - 1
        for l in range(1, self.num_layers):
            h = torch.baddbmm(self.biases[l - 1].unsqueeze(-2), h, self.weights[l - 1])
            if l < last:
                h = self._act[0](h)
        return h
