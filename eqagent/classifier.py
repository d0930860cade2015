"""An energy-net classifier trained by EP: the input clamped, the output nudged toward the label.

:class:`EPClassifier` is the warm-up's model (Scellier's 784-500-10 energy net, or a readout through a
cross-entropy cost, Laborieux et al. 2021); ``eqagent mnist`` (:mod:`eqagent.apps.mnist`) trains it on MNIST.
"""

from __future__ import annotations

import torch
from torch import nn

from eqagent.costs import Cost, make_cost
from eqagent.energy import EnergyNet
from eqagent.ep import EPConfig, ep_gradients, free_phase, write_grads

__all__ = ["EPClassifier"]


class EPClassifier:
    """A layered energy net classifier trained by EP (input clamped, output nudged toward the label).

    Args:
        sizes: Layer sizes, input first; the last layer has one unit per class (``mse``) or feeds a readout.
        num_classes: Number of classes.
        cost: ``mse`` or ``cross_entropy``.
        ep: EP settings.
        generator: Generator for a reproducible initialisation.
    """

    def __init__(
        self,
        sizes: list[int],
        num_classes: int,
        cost: str = "mse",
        ep: EPConfig | None = None,
        generator: torch.Generator | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        if cost == "mse" and sizes[-1] != num_classes:
            raise ValueError(
                f"with the mse cost the last layer must have {num_classes} units, got {sizes[-1]}"
            )
        self.num_classes = num_classes
        self.net = EnergyNet(sizes, generator=generator, device=device)
        self.cost: Cost = make_cost(cost, sizes[-1], num_classes, generator=generator, device=device)
        self.cost_name = cost
        self.ep = ep or EPConfig()

    def parameters(self) -> list[nn.Parameter]:
        return self.net.trainable_parameters() + [p for p in self.cost.parameters() if p.requires_grad]

    def target(self, labels: torch.Tensor) -> torch.Tensor:
        if self.cost_name == "mse":
            return nn.functional.one_hot(labels, self.num_classes).to(self.net.weights[0].dtype)
        return labels

    def train_batch(self, x: torch.Tensor, labels: torch.Tensor, optimizer: torch.optim.Optimizer) -> float:
        """One EP step (free, ±β nudged, local update via ``optimizer``); returns the free-phase cost."""
        step = ep_gradients(self.net, self.cost, x, self.target(labels), self.ep)
        optimizer.zero_grad(set_to_none=True)
        write_grads(step.grads)
        optimizer.step()
        return step.loss

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Output at the free equilibrium (output-layer state, or readout logits)."""
        res = free_phase(self.net, x, self.ep)
        return self.cost.output(res.states[-1])

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        return torch.cat(
            [self.logits(x[i : i + batch_size]).argmax(-1) for i in range(0, len(x), batch_size)]
        )
