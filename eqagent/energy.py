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

import torch
from torch import nn

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "EnergyNet",
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


class EnergyNet(nn.Module):
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
