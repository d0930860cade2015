"""The prediction-error energy of an ``nn.Sequential``: what :class:`eqagent.optim.EPOptimizer` relaxes."""

from __future__ import annotations

import torch
from torch import nn

from eqagent.energy.prediction_error import PredictionErrorEnergy, _act_and_prime

__all__ = ["SequentialEnergy"]

_ELEMENTWISE = (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.Hardtanh, nn.Identity)
_SUPPORTED = "Linear, Flatten, ReLU, Tanh, Sigmoid, Hardtanh, Identity"


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
