"""The layer-wise prediction-error energy ``E(s) = Σ_l ½‖s_l − f_l(s_{l−1})‖²`` (Whittington & Bogacz 2017;
Millidge et al. 2022): its free equilibrium *is* the feed-forward pass.

:func:`propagate` is the family's one forward computation. The free phase of EP (:meth:`feedforward`), the
differentiable forward of the backprop baselines (:meth:`EnsembleMLPEnergy.forward`), the terminal value and the
world model's imagined rollouts (with weights rewritten by :meth:`eqagent.world_model.EPWorldModel.imagine`) all
call it; only the nudged relaxation steps evaluate ``f_l`` at states off the forward pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from eqagent.energy.base import Dynamics, LayeredEnergy, row_signs

__all__ = ["EnsembleMLPEnergy", "PredictionErrorEnergy", "propagate"]


Layer = tuple[torch.Tensor, "torch.Tensor | None"]

_UNUSED = torch.zeros(0)  # the input layer's place in per-layer lists (it has no prediction error)


def affine(
    h: torch.Tensor, a: torch.Tensor, b: torch.Tensor | None, out: torch.Tensor | None = None
) -> torch.Tensor:
    """``h A + b`` in one kernel: ``baddbmm`` for ensembles ``(M, B, n)``, ``addmm`` for single nets (written into
    ``out`` when given)."""
    if b is None:
        return torch.matmul(h, a, out=out)
    if h.dim() == 3 and a.dim() == 3:
        return torch.baddbmm(b, h, a, out=out)
    if h.dim() == 2 and a.dim() == 2:
        return torch.addmm(b, h, a, out=out)
    return torch.add(torch.matmul(h, a), b, out=out)


def propagate(
    h: torch.Tensor,
    layers: Sequence[Layer],
    activate: Callable[[int, torch.Tensor], torch.Tensor],
    keep: bool = False,
    out: torch.Tensor | None = None,
) -> torch.Tensor | list[tuple[torch.Tensor, torch.Tensor | None]]:
    """The family's forward computation: ``h_l = act_l(h_{l−1} A_l + b_l)`` for ``l = 1 … L``.

    Args:
        h: Input ``([M,] B, n_0)``.
        layers: ``(A_l, b_l)`` per layer: ``A_l`` ``([M,] n_{l−1}, n_l)``, ``b_l`` broadcastable to the
            pre-activation (``([M,] 1, n_l)``, or one row per sample) or ``None``.
        activate: ``activate(l, pre) → h_l``.
        keep: Return ``(h_l, pre_l)`` for every layer (``(input, None)`` first) instead of the output only.
        out: Where the last layer's pre-activation is written (e.g. a slice of a preallocated rollout buffer);
            with a linear last layer (``activate`` returning its argument) the output lands there.
    """
    kept: list[tuple[torch.Tensor, torch.Tensor | None]] = [(h, None)]
    last = len(layers)
    for l, (a, b) in enumerate(layers, 1):
        pre = affine(h, a, b, out if l == last else None)
        h = activate(l, pre)
        if keep:
            kept.append((h, pre))
    return kept if keep else h


def _times(x: torch.Tensor, d: torch.Tensor | None) -> torch.Tensor:
    """``x ⊙ d``, where a derivative ``None`` stands for 1 (a linear layer)."""
    return x if d is None else x * d


def _act_and_prime(mods: Sequence[nn.Module], z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Applies a chain of elementwise activations to ``z``; returns the output and the chain's derivative
    (``None``: 1)."""
    if not mods:
        return z, None
    if len(mods) == 1 and isinstance(mods[0], nn.Tanh):  # the common case in two ops
        z = torch.tanh(z)
        return z, 1 - z * z
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
    stack_phases = True
    """Symmetric EP relaxes both nudged phases as one batch (:meth:`stacked`): the nets are small, so the cost is
    per call, not per row."""

    def _in_out(self, l: int) -> torch.Tensor:
        raise NotImplementedError

    def _bias(self, l: int) -> torch.Tensor | None:
        raise NotImplementedError

    def _activate(self, l: int, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(f_l, f_l')`` from the pre-activation; ``f_l'`` is ``None`` for a linear layer."""
        raise NotImplementedError

    def _param_grads(
        self, l: int, g_in_out: torch.Tensor, g_bias: torch.Tensor
    ) -> dict[nn.Parameter, torch.Tensor]:
        raise NotImplementedError

    def layers(self) -> list[Layer]:
        """``(A_l, b_l)`` for ``l = 1 … L`` in the form :func:`propagate` takes."""
        out = []
        for l in range(1, self.num_layers):
            b = self._bias(l)
            out.append((self._in_out(l), None if b is None else b.unsqueeze(-2)))
        return out

    def _act_value(self, l: int, pre: torch.Tensor) -> torch.Tensor:
        return self._activate(l, pre)[0]

    def _f(self, l: int, below: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``f_l(s_{l−1})`` and its activation derivative at the pre-activation."""
        b = self._bias(l)
        return self._activate(l, affine(below, self._in_out(l), None if b is None else b.unsqueeze(-2)))

    def _param_versions(self) -> tuple:
        """Versions of the layer parameters: a cache of values computed from them is stale once they change."""
        out = []
        for l in range(1, self.num_layers):
            b = self._bias(l)
            out += [self._in_out(l)._version, None if b is None else b._version]
        return tuple(out)

    def _f1_key(self, s0: torch.Tensor) -> tuple:
        a, b = self._in_out(1), self._bias(1)
        return (id(s0), s0._version, id(a), a._version, None if b is None else b._version)

    def _f1(self, s0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``f_1(s_0)`` and its derivative, from the first layer's pre-activation kept for the same input tensor
        and unchanged first-layer parameters (by :meth:`feedforward` or an earlier call).

        The input is clamped in every phase of an EP step, so the first layer's matmul is done once per step.
        """
        key = self._f1_key(s0)
        cached = getattr(self, "_f1_cache", None)
        if cached is None or cached[0] != key or cached[1] is not s0:
            b = self._bias(1)
            # caches go into __dict__ directly: nn.Module.__setattr__ costs ~10 µs a call
            cached = self.__dict__["_f1_cache"] = (
                key,
                s0,
                affine(s0, self._in_out(1), None if b is None else b.unsqueeze(-2)),
            )
        return self._activate(1, cached[2])

    def stacked(self, states: Sequence[torch.Tensor], copies: int) -> list[torch.Tensor]:
        """``copies`` copies of every state along the batch dimension, the first layer's kept pre-activation too."""
        out = [torch.cat([s] * copies, dim=-2) for s in states]
        cached = getattr(self, "_f1_cache", None)
        if cached is not None and cached[1] is states[0] and cached[0] == self._f1_key(states[0]):
            self.__dict__["_f1_cache"] = (
                self._f1_key(out[0]),
                out[0],
                torch.cat([cached[2]] * copies, dim=-2),
            )
        if self._is_free(states):  # copies of the free equilibrium are one too
            self.__dict__["_free"] = (list(out), self._param_versions())
        return out

    def _is_free(self, states: Sequence[torch.Tensor]) -> bool:
        """Whether ``states`` are (the very tensors of) the free equilibrium :meth:`feedforward` (or
        :meth:`stacked` of it) returned under the current parameters: there ``s_l = f_l(s_{l−1})`` exactly."""
        free = getattr(self, "_free", None)
        return free is not None and self._same(free[0], free[1], states)

    def _same(self, kept: Sequence[torch.Tensor], versions: tuple, states: Sequence[torch.Tensor]) -> bool:
        """Whether ``states`` are the very tensors ``kept`` under parameters still at ``versions``: what a record
        computed from them (the free equilibrium, a step's errors) may be reused for."""
        return (
            len(kept) == len(states)
            and all(a is b for a, b in zip(kept, states))
            and versions == self._param_versions()
        )

    def _prime_of_output(self, l: int, z: torch.Tensor) -> Any:
        """``f_l'`` from the layer's output ``z = f_l(·)`` (``None``: linear), or ``NotImplemented`` where the
        family cannot tell it from the output (then :meth:`relax_step` recomputes ``f_l``)."""
        return NotImplemented

    def _fl(self, l: int, states: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self._f1(states[0]) if l == 1 else self._f(l, states[l - 1])

    @torch.no_grad()
    def feedforward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The free equilibrium: :func:`propagate` from the clamped input (every layer's state)."""
        s0 = self.check_layer(0, x, "input")
        kept = propagate(s0, self.layers(), self._act_value, keep=True)
        self.__dict__["_f1_cache"] = (self._f1_key(s0), s0, kept[1][1])
        states = [h for h, _ in kept]
        self.__dict__["_free"] = (list(states), self._param_versions())
        return states

    def errors(self, states: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Prediction errors ``e_l = s_l − f_l(s_{l−1})`` and derivatives ``f_l'`` (index 0 unused).

        For the states a fixed-point step just returned they are that step's messages and derivatives (kept, not
        recomputed: the step set ``s_l = f_l(s_{l−1}) + msg_l``)."""
        last = getattr(self, "_last_errors", None)
        if last is not None and self._same(last[0], last[3], states):
            return [_UNUSED, *last[1][1:]], [_UNUSED, *last[2][1:]]
        es, ds = [_UNUSED], [_UNUSED]
        for l in range(1, self.num_layers):
            f, d = self._fl(l, states)
            es.append(states[l] - f)
            ds.append(d)
        return es, ds

    def energy(self, states: Sequence[torch.Tensor]) -> torch.Tensor:
        es, _ = self.errors(states)
        return sum(0.5 * (e**2).sum(-1) for e in es[1:])

    def check_mode(self, mode: str, free: Sequence[int]) -> None:
        super().check_mode(mode, free)
        if list(free) != list(range(1, self.num_layers)):
            raise ValueError(f"{type(self).__name__} relaxes with exactly the input layer clamped")

    def relax_context(self, states: Sequence[torch.Tensor], clamped: set[int]) -> dict:
        # the input is clamped: f_1(s_0) is constant; from the free equilibrium, the first step's f_l(s_{l−1}) are
        # the states themselves
        return {"f1": self._f1(states[0]), "at_rest": self._is_free(states)}

    def relax_step(self, states: Sequence[torch.Tensor], dyn: Dynamics, ctx: dict) -> list[torch.Tensor]:
        L = self.num_layers - 1
        fs = None
        if ctx.pop("at_rest", False):  # only the first step starts at the free equilibrium
            primes = [self._prime_of_output(l, states[l]) for l in range(2, L + 1)]
            if all(p is not NotImplemented for p in primes):
                fs = [None, ctx["f1"]] + [(states[l], p) for l, p in zip(range(2, L + 1), primes)]
        if fs is None:
            fs = [None, ctx["f1"]] + [self._f(l, states[l - 1]) for l in range(2, L + 1)]
        s = list(states)
        if dyn.mode == "fixed_point":
            msg = [None] * (L + 1)
            msg[L] = -dyn.nudge(states[L]) if dyn.nudged else torch.zeros_like(states[L])
            for l in range(L - 1, 0, -1):
                msg[l] = _times(msg[l + 1], fs[l + 1][1]) @ self._in_out(l + 1).transpose(-1, -2)
            s[1] = fs[1][0] + msg[1]
            ds = [None, fs[1][1]]
            for l in range(2, L + 1):
                f, d = self._f(l, s[l - 1])
                s[l] = f + msg[l]
                ds.append(d)
            # at these states the prediction errors are the messages: kept for errors() (the EP update's next call)
            self.__dict__["_last_errors"] = (list(s), msg, ds, self._param_versions())
            return s
        es = [None] + [states[l] - fs[l][0] for l in range(1, L + 1)]
        for l in range(1, L + 1):
            g = es[l]
            if l < L:
                g = g - _times(es[l + 1], fs[l + 1][1]) @ self._in_out(l + 1).transpose(-1, -2)
            elif dyn.nudged:
                g = g + dyn.nudge(states[L])
            s[l] = states[l] - dyn.eps * g
        return s

    def energy_param_grad_diff(
        self, a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]
    ) -> dict[nn.Parameter, torch.Tensor]:
        ea, da = self.errors(a)
        eb, db = (ea, da) if all(x is y for x, y in zip(a, b)) else self.errors(b)
        return self._grad_diff(a, b, ea, da, eb, db)

    def stacked_grad_diff(
        self, states: Sequence[torch.Tensor], b: int, scale: float = 1.0
    ) -> dict[nn.Parameter, torch.Tensor]:
        """``scale`` × :meth:`energy_param_grad_diff` of the two halves (rows ``:b`` and ``b:``) of stacked states
        ``(…, 2b, n)``: one signed pass over all ``2b`` rows (row weights ``−scale/b`` for the first half and
        ``+scale/b`` for the second), so each layer's rule is one matmul and one sum for both halves."""
        es, ds = self.errors(states)
        rows = states[0].shape[-2]
        if rows != 2 * b:
            raise ValueError(f"stacked states must hold 2 × {b} rows, got {rows}")
        # (2b, 1): −(a-terms) + (b-terms), the rule's minus sign and the batch mean folded in
        signs = row_signs(b, -(scale / b), states[0])
        out: dict[nn.Parameter, torch.Tensor] = {}
        for l in range(1, self.num_layers):
            g = es[l] * signs if ds[l] is None else es[l] * ds[l] * signs  # (…, 2b, n_l)
            gw = states[l - 1].transpose(-1, -2) @ g  # (…, n_{l−1}, n_l)
            out.update(self._param_grads(l, gw, g.sum(-2)))
        return out

    def _grad_diff(self, a, b, ea, da, eb, db) -> dict[nn.Parameter, torch.Tensor]:
        """The local rule from both states' prediction errors ``e`` and derivatives ``d`` (index 0 unused)."""
        batch = a[0].shape[-2]
        out: dict[nn.Parameter, torch.Tensor] = {}
        for l in range(1, self.num_layers):
            ga, gb = _times(ea[l], da[l]), _times(eb[l], db[l])
            if a[l - 1] is b[l - 1]:
                gw = a[l - 1].transpose(-1, -2) @ (ga - gb)
            else:
                gw = a[l - 1].transpose(-1, -2) @ ga - b[l - 1].transpose(-1, -2) @ gb
            out.update(self._param_grads(l, -gw / batch, -(ga - gb).mean(-2)))
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
        # plain lists of the same Parameter objects: indexing a ParameterList costs microseconds per access
        self._w, self._b = list(self.weights), list(self.biases)

    def _apply(self, fn, recurse=True):
        out = super()._apply(fn, recurse)
        self._w, self._b = list(self.weights), list(self.biases)  # in case conversion replaced the Parameters
        return out

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
        return self._w[l - 1]

    def _bias(self, l: int) -> torch.Tensor | None:
        return self._b[l - 1]

    def _activate(self, l: int, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return _act_and_prime([] if l == self.num_layers - 1 else self._act, pre)

    def _param_grads(self, l, g_in_out, g_bias):
        return {self._w[l - 1]: g_in_out, self._b[l - 1]: g_bias}

    def _act_value(self, l: int, pre: torch.Tensor) -> torch.Tensor:
        return pre if l == self.num_layers - 1 else self._act[0](pre)

    def _prime_of_output(self, l: int, z: torch.Tensor) -> torch.Tensor | None:
        """As :func:`_act_and_prime` computes it, from the output (tanh: ``1 − z²``, sigmoid: ``z(1 − z)``, ReLU:
        ``z > 0``; the linear output: ``None``)."""
        if l == self.num_layers - 1:
            return None
        if self.activation == "tanh":
            return 1 - z * z
        if self.activation == "sigmoid":
            return z * (1 - z)
        return (z > 0).to(z.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Output of every member (the free equilibrium's last layer), ``(M, B, n_L)``; differentiable.

        :func:`propagate` without the activation derivatives that relaxation needs (what the backprop baseline
        trains and the terminal value plans with).
        """
        return propagate(self.check_layer(0, x, "input"), self.layers(), self._act_value)
