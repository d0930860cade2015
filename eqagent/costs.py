"""Costs that nudge the output layer of an energy net: ``F = E + βC``.

A :class:`Cost` states its contract in closed form so that relaxation and learning need no autograd graph:

* ``value(s_out, target)`` — per-sample cost, shape ``([M,] B)``;
* ``grad_state(s_out, target)`` — ``∂C/∂s_out`` (the nudging force is ``−β`` times this);
* ``param_grads(s_out, target)`` — ``∂C/∂θ`` for the cost's own parameters (a readout), batch-averaged;
* ``output(s_out)`` — what the net predicts (the output state, or the readout's logits);
* ``check_target(target, s_out)`` — validates and converts a target, raising ``ValueError`` naming the problem.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from eqagent.energy.activations import Activation, get_activation

__all__ = ["Cost", "CrossEntropyCost", "LogitCrossEntropyCost", "MSECost", "WorldModelCost", "make_cost"]


class Cost(nn.Module):
    """Abstract base: a differentiable cost on the output layer with closed-form derivatives.

    Attributes:
        residual: ``∂C/∂s_out = s_out − target`` exactly (the MSE on the output state): a fused kernel may then
            apply the nudge itself.
    """

    residual: bool = False

    def check_target(self, target: torch.Tensor, s_out: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def value(self, s_out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def grad_state(self, s_out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def param_grads(self, s_out: torch.Tensor, target: torch.Tensor) -> dict[nn.Parameter, torch.Tensor]:
        return {}

    def output(self, s_out: torch.Tensor) -> torch.Tensor:
        return s_out


class MSECost(Cost):
    """``C = ½‖s_L − y‖²`` on the output state (Scellier & Bengio 2017)."""

    residual = True

    def check_target(self, target: torch.Tensor, s_out: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(target):
            target = torch.as_tensor(target)
        target = target.to(device=s_out.device, dtype=s_out.dtype)
        if target.shape != s_out.shape:
            if target.dim() == s_out.dim() - 1 and target.shape == s_out.shape[1:]:
                target = target.unsqueeze(0).expand_as(s_out)
            else:
                raise ValueError(
                    f"MSE target must have the output layer's shape {tuple(s_out.shape)}, got {tuple(target.shape)}"
                )
        if not torch.isfinite(target).all():
            raise ValueError("target contains NaN or inf")
        return target

    def value(self, s_out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((s_out - target) ** 2).sum(-1)

    def grad_state(self, s_out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return s_out - target


class CrossEntropyCost(Cost):
    """Softmax cross-entropy through a linear readout of ``ρ(s_L)`` (Laborieux et al. 2021).

    The readout ``logits = ρ(s_L) W_r + b_r`` is not part of the energy: it only shapes the nudging force and
    its parameters get the gradient ``∂C/∂θ`` at the nudged state(s).

    Args:
        in_features: Size of the output layer ``n_L``.
        num_classes: Number of classes.
        activation: ρ of the output layer.
        members: Ensemble size (readout parameters get a leading member dimension), or ``None``.
        generator: Optional generator for a reproducible initialisation.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        activation: str | Activation = "hard_sigmoid",
        members: int | None = None,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.num_classes = int(num_classes)
        self.act = get_activation(activation)
        lead = () if members is None else (int(members),)
        bound = math.sqrt(6.0 / (in_features + num_classes))
        w = (torch.rand((*lead, in_features, num_classes), generator=generator, dtype=dtype) * 2 - 1) * bound
        self.weight = nn.Parameter(w.to(device))
        self.bias = nn.Parameter(torch.zeros((*lead, num_classes), dtype=dtype, device=device))

    def check_target(self, target: torch.Tensor, s_out: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(target):
            target = torch.as_tensor(target)
        batch = s_out.shape[-2]
        if target.dtype in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
            if target.shape != (batch,):
                raise ValueError(f"class-index target must have shape ({batch},), got {tuple(target.shape)}")
            if target.numel() and (int(target.min()) < 0 or int(target.max()) >= self.num_classes):
                raise ValueError(
                    f"class indices must lie in [0, {self.num_classes}), got {target.tolist()[:8]}..."
                )
            target = nn.functional.one_hot(target.long().to(s_out.device), self.num_classes)
        if target.shape[-2:] != (batch, self.num_classes):
            raise ValueError(
                f"probability target must have shape ({batch}, {self.num_classes}), got {tuple(target.shape)}"
            )
        target = target.to(device=s_out.device, dtype=s_out.dtype)
        if not torch.isfinite(target).all():
            raise ValueError("target contains NaN or inf")
        return target

    def output(self, s_out: torch.Tensor) -> torch.Tensor:
        return self.act(s_out) @ self.weight + self.bias.unsqueeze(-2)

    def value(self, s_out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(self.output(s_out), dim=-1)
        return -(target * logp).sum(-1)

    def _dlogits(self, s_out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.output(s_out), dim=-1) - target

    def grad_state(self, s_out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (self._dlogits(s_out, target) @ self.weight.transpose(-1, -2)) * self.act.prime(s_out)

    def param_grads(self, s_out: torch.Tensor, target: torch.Tensor) -> dict[nn.Parameter, torch.Tensor]:
        d = self._dlogits(s_out, target)
        batch = s_out.shape[-2]
        return {
            self.weight: (self.act(s_out).transpose(-1, -2) @ d) / batch,
            self.bias: d.mean(-2),
        }


class LogitCrossEntropyCost(Cost):
    """Softmax cross-entropy on the output state itself (the output layer holds logits, no readout)."""

    def check_target(self, target: torch.Tensor, s_out: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(target):
            target = torch.as_tensor(target)
        batch, k = s_out.shape[-2], s_out.shape[-1]
        if not target.is_floating_point():
            if target.shape != (batch,):
                raise ValueError(f"class-index target must have shape ({batch},), got {tuple(target.shape)}")
            if target.numel() and (int(target.min()) < 0 or int(target.max()) >= k):
                raise ValueError(f"class indices must lie in [0, {k}) for {k} output units")
            target = nn.functional.one_hot(target.long().to(s_out.device), k)
        if target.shape[-2:] != (batch, k):
            raise ValueError(f"probability target must have shape ({batch}, {k}), got {tuple(target.shape)}")
        target = target.to(device=s_out.device, dtype=s_out.dtype)
        if not torch.isfinite(target).all():
            raise ValueError("target contains NaN or inf")
        return target

    def value(self, s_out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return -(target * torch.log_softmax(s_out, dim=-1)).sum(-1)

    def grad_state(self, s_out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.softmax(s_out, dim=-1) - target


class WorldModelCost(Cost):
    """Cost on the world model's output ``[Δobs (d), reward (1), termination logit (1)]``.

    ``C = ½‖Δ̂ − Δ‖² + ½(r̂ − r)² + w·BCE(σ(t̂), t)`` in normalised units.
    """

    def __init__(self, obs_dim: int, term_weight: float = 1.0) -> None:
        super().__init__()
        self.obs_dim = obs_dim
        self.term_weight = float(term_weight)

    def check_target(self, target: torch.Tensor, s_out: torch.Tensor) -> torch.Tensor:
        target = torch.as_tensor(target).to(device=s_out.device, dtype=s_out.dtype)
        if target.shape[-1] != self.obs_dim + 2:
            raise ValueError(
                f"world-model target must have {self.obs_dim + 2} columns, got {tuple(target.shape)}"
            )
        if target.dim() == 2:
            target = target.unsqueeze(0).expand_as(s_out)
        if target.shape != s_out.shape:
            raise ValueError(f"world-model target shape {tuple(target.shape)} != output {tuple(s_out.shape)}")
        if not torch.isfinite(target).all():
            raise ValueError("world-model target contains NaN or inf")
        return target

    def value(self, s_out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        k = self.obs_dim + 1
        sq = 0.5 * ((s_out[..., :k] - target[..., :k]) ** 2).sum(-1)
        bce = nn.functional.binary_cross_entropy_with_logits(s_out[..., k], target[..., k], reduction="none")
        return sq + self.term_weight * bce

    def grad_state(self, s_out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        k = self.obs_dim + 1
        g = s_out - target
        g[..., k] = self.term_weight * (torch.sigmoid(s_out[..., k]) - target[..., k])
        return g


def make_cost(name: str, out_features: int, num_classes: int | None = None, **kwargs) -> Cost:
    """Builds a cost by name: ``"mse"`` or ``"cross_entropy"`` (needs ``num_classes``)."""
    if name == "mse":
        return MSECost()
    if name == "cross_entropy":
        if num_classes is None:
            raise ValueError("cross_entropy cost needs num_classes")
        return CrossEntropyCost(out_features, num_classes, **kwargs)
    raise ValueError(f"unknown cost {name!r}; choose 'mse' or 'cross_entropy'")
