"""The layered Hopfield energy (Scellier & Bengio 2017) and its two relaxation dynamics.

A network of ``L + 1`` layers with sizes ``(n_0, ..., n_L)`` has state ``s = (s_0, ..., s_L)`` and energy

    E(s) = ½ Σ_l ‖s_l‖² − Σ_l ρ_l(s_l)ᵀ W_l ρ_{l+1}(s_{l+1}) − Σ_l b_lᵀ ρ_l(s_l)

The cost ``C`` (see :mod:`eqagent.costs`) acts on the last layer, and the total energy is ``F = E + βC``. States
are ``(B, n_l)`` tensors. The input layer (layer 0) uses ``input_activation`` (``identity`` by default) so that
clamped inputs of any range enter the energy as given. On CUDA the fixed-point step may run as one fused Triton
launch per layer (:mod:`eqagent.kernels.triton_relax`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from eqagent.energy.activations import Activation, get_activation
from eqagent.energy.base import Dynamics, LayeredEnergy

__all__ = ["EnergyNet"]


class EnergyNet(LayeredEnergy):
    """A layered Hopfield energy network (Scellier & Bengio 2017).

    Args:
        sizes: Layer sizes ``(n_0, ..., n_L)``, at least two layers.
        activation: ρ of the layers 1..L (name from :data:`ACTIVATIONS`).
        input_activation: ρ of layer 0.
        input_bias: Whether layer 0 has a bias (useful when the input is left free, e.g. for dreaming).
        init_gain: Scale of the Glorot-uniform weight initialisation.
        generator: Optional ``torch.Generator`` for a reproducible initialisation.
        dtype: Parameter dtype.
        device: Parameter device.

    The parameters are ``weights[l]`` of shape ``(n_l, n_{l+1})`` and ``biases[l]`` of shape ``(n_l,)``;
    ``biases[0]`` is a zero buffer-like parameter without gradient when ``input_bias`` is False. States are
    ``(B, n_l)``.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        activation: str | Activation = "hard_sigmoid",
        input_activation: str | Activation = "identity",
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
        if not init_gain > 0:
            raise ValueError(f"init_gain must be > 0, got {init_gain}")
        self.sizes = sizes
        self.input_bias = bool(input_bias)
        act = get_activation(activation)
        self.activations: list[Activation] = [get_activation(input_activation)] + [act] * (len(sizes) - 1)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            bound = init_gain * math.sqrt(6.0 / (n_in + n_out))
            w = (torch.rand((n_in, n_out), generator=generator, dtype=dtype) * 2 - 1) * bound
            self.weights.append(nn.Parameter(w.to(device)))
        for i, n in enumerate(sizes):
            b = nn.Parameter(torch.zeros((n,), dtype=dtype, device=device))
            if i == 0 and not self.input_bias:
                b.requires_grad_(False)
            self.biases.append(b)

    # ------------------------------------------------------------------ basics
    def project(self, l: int, s: torch.Tensor) -> torch.Tensor:
        return self.activations[l].project(s)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters that EP learns (weights, biases with ``requires_grad``)."""
        return [p for p in self.parameters() if p.requires_grad]

    def check_layer(self, l: int, value: torch.Tensor, what: str = "state") -> torch.Tensor:
        """Validates ``value`` for layer ``l`` (a single sample ``(n_l,)`` becomes a batch of one).

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
        if value.dim() != 2:
            raise ValueError(f"{what} for layer {l} must be (B, {n}), got shape {tuple(value.shape)}")
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
        return [
            self.activations[l].project(torch.zeros((batch, n), dtype=p.dtype, device=p.device))
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
        """Per-sample energy ``E(s)``, shape ``(B,)``."""
        e = sum(0.5 * (s**2).sum(-1) for s in states)
        rhos = [self.rho(l, s) for l, s in enumerate(states)]
        for l, w in enumerate(self.weights):
            e = e - ((rhos[l] @ w) * rhos[l + 1]).sum(-1)
        for l, b in enumerate(self.biases):
            e = e - (rhos[l] * b.unsqueeze(-2)).sum(-1)
        return e

    # ------------------------------------------------------------------ dynamics (see eqagent.relax)
    def check_mode(self, mode: str, free: Sequence[int]) -> None:
        super().check_mode(mode, free)
        if mode == "fixed_point":
            bad = sorted({self.activations[l].name for l in free if self.activations[l].smooth})
            if bad:
                raise ValueError(
                    "fixed_point relaxation needs clipping activations (hard_sigmoid, hard_tanh, identity); "
                    f"free layers use {bad}: use mode='gradient'"
                )

    relax_backend: str = "auto"
    """``"auto"`` (for CUDA tensors with Triton installed: whichever of the Triton fused step and the torch step
    is faster at this shape, timed once and cached by :data:`eqagent.kernels.autotune.AUTOTUNER`; torch
    otherwise), ``"torch"``, or ``"triton"`` (forced; on CPU it needs ``TRITON_INTERPRET=1``, as in the tests)."""

    def _backend(self, states: Sequence[torch.Tensor], clamped: set[int] | None = None) -> str:
        if self.relax_backend == "torch":
            return "torch"
        if self.relax_backend == "auto" and states[0].device.type != "cuda":
            return "torch"
        from eqagent.kernels import triton_relax

        if triton_relax.available(states[0].device):
            return "triton" if self.relax_backend == "triton" else self._autotuned(states, clamped or set())
        if self.relax_backend == "triton":
            raise RuntimeError(
                "relax_backend='triton' but Triton cannot run here (no CUDA, no TRITON_INTERPRET=1)"
            )
        return "torch"

    def _autotuned(self, states: Sequence[torch.Tensor], clamped: set[int]) -> str:
        """The faster backend for one free fixed-point step at this shape (timed once per shape, then cached)."""
        free = tuple(l for l in range(self.num_layers) if l not in clamped)
        if any(self.activations[l].smooth for l in free):  # gradient dynamics: the kernel does not apply
            return "torch"
        from eqagent.kernels.autotune import AUTOTUNER

        s0 = states[0]
        key = (
            "relax",
            tuple(self.sizes),
            tuple(s0.shape[:-1]),
            s0.dtype,
            str(s0.device),
            tuple(sorted(clamped)),
        )
        dyn = Dynamics(free=free)

        def step(backend: str):
            ctx = {"clamped": clamped, "backend": backend}
            return lambda: self.relax_step(states, dyn, ctx)

        return AUTOTUNER.choose(key, {"torch": step("torch"), "triton": step("triton")})

    def relax_context(self, states: Sequence[torch.Tensor], clamped: set[int]) -> dict:
        """The clamped set and the backend; the constant drives are built on first use (see :meth:`_const`)."""
        return {"clamped": clamped, "backend": self._backend(states, clamped)}

    def _const(self, states: Sequence[torch.Tensor], ctx: dict) -> dict[int, torch.Tensor]:
        """Drive from the bias and the clamped neighbours: constant while relaxing, built once per relaxation.

        Each is a ``(B, n_l)`` view of feature-major storage (the bias broadcast over the batch when no
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
            c = self.biases[l].detach().unsqueeze(-1)  # (n_l, 1)
            if l > 0 and (l - 1) in clamped:
                w = self.weights[l - 1].detach().transpose(-1, -2)
                c = torch.addmm(c, w, self.rho(l - 1, states[l - 1]).transpose(-1, -2))  # (n_l, B)
            if l < last and (l + 1) in clamped:
                c = torch.addmm(c, self.weights[l].detach(), self.rho(l + 1, states[l + 1]).transpose(-1, -2))
            const[l] = c.transpose(-1, -2).expand_as(states[l])
        ctx["const"] = const
        return const

    def _ctx_drive(self, s: Sequence[torch.Tensor], l: int, ctx: dict) -> torch.Tensor:
        """Drive of layer ``l``: ``const + ρ(s_{l−1}) W_{l−1} + ρ(s_{l+1}) W_lᵀ`` with fused multiply-adds."""
        d, clamped, last = self._const(s, ctx)[l], ctx["clamped"], self.num_layers - 1
        fresh = False
        if l > 0 and (l - 1) not in clamped:
            d = torch.addmm(d, self.rho(l - 1, s[l - 1]), self.weights[l - 1])
            fresh = True
        if l < last and (l + 1) not in clamped:
            w_t = self.weights[l].transpose(-1, -2)
            if fresh:
                d.addmm_(self.rho(l + 1, s[l + 1]), w_t)
            else:
                d = torch.addmm(d, self.rho(l + 1, s[l + 1]), w_t)
        return d

    def relax_step(self, states: Sequence[torch.Tensor], dyn: Dynamics, ctx: dict) -> list[torch.Tensor]:
        """One step: fixed-point (odd layers, then even layers, each ``s_l ← Π(drive_l)``) or gradient."""
        s = list(states)
        last = self.num_layers - 1
        free = dyn.free
        if dyn.mode == "fixed_point" and ctx["backend"] == "triton" and (not dyn.nudged or dyn.cost.residual):
            from eqagent.kernels.triton_relax import fused_layer_update

            clamped = ctx["clamped"]
            for l in [l for l in free if l % 2 == 1] + [l for l in free if l % 2 == 0]:
                lo = l > 0 and (l - 1) not in clamped
                hi = l < last and (l + 1) not in clamped
                act = self.activations[l]
                nudge = dyn.nudged and l == last
                s[l] = fused_layer_update(
                    self._const(s, ctx)[l],
                    s[l - 1] if lo else None,  # ρ(s) = s on the box of the clipping activations
                    self.weights[l - 1] if lo else None,
                    s[l + 1] if hi else None,
                    self.weights[l] if hi else None,
                    act.low,
                    act.high,
                    state=s[l] if nudge else None,
                    target=dyn.target if nudge else None,
                    beta=dyn.beta if nudge else 0.0,
                )
            return s
        if dyn.mode == "fixed_point":
            return self._fixed_point_step_t(s, dyn, ctx)
        grads = {}
        for l in free:  # ∂F/∂s_l = s_l − ρ'(s_l) ⊙ drive_l (+ β ∂C/∂s_L)
            g = s[l] - self.activations[l].prime(s[l]) * self._ctx_drive(s, l, ctx)
            if dyn.nudged and l == last:
                g = g + dyn.nudge(s[l])
            grads[l] = g
        for l in free:
            s[l] = self.activations[l].project(s[l] - dyn.eps * grads[l])
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

    def _fixed_point_step_t(self, s: list[torch.Tensor], dyn: Dynamics, ctx: dict) -> list[torch.Tensor]:
        """One fixed-point step computed feature-major: ``s_lᵀ ← Π(c_l + W_{l−1}ᵀ s_{l−1}ᵀ + W_l s_{l+1}ᵀ)``.

        Same arithmetic as ``s_l ← Π(drive_l)``; the products are laid out as ``(n_l, B)`` so that thin layers
        (a 10-unit output, a 7-unit world-model head) make wide matrix products, and the new states are written
        in place of the fresh products (a free neighbour is in its box, where ``ρ(s) = s``). The returned states
        are ``(B, n_l)`` views of feature-major storage.
        """
        up, const, clamped = self._upward_weights(ctx), self._const(s, ctx), ctx["clamped"]
        last = self.num_layers - 1
        free = dyn.free
        for l in [l for l in free if l % 2 == 1] + [l for l in free if l % 2 == 0]:
            d, fresh = const[l].transpose(-1, -2), False  # (n_l, B)
            if l > 0 and (l - 1) not in clamped:
                d, fresh = torch.addmm(d, up[l - 1], s[l - 1].transpose(-1, -2)), True
            if l < last and (l + 1) not in clamped:
                down = self.weights[l].detach()
                if fresh:
                    d.addmm_(down, s[l + 1].transpose(-1, -2))
                else:
                    d, fresh = torch.addmm(d, down, s[l + 1].transpose(-1, -2)), True
            if not fresh:
                d = d.clone()
            if dyn.nudged and l == last:
                d.sub_(dyn.nudge(s[l]).transpose(-1, -2))
            act = self.activations[l]
            if act.bounded:
                d.clamp_(act.low, act.high)
            s[l] = d.transpose(-1, -2)
        return s

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
        return f"sizes={self.sizes}, activations={acts}"
