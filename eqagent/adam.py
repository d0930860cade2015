"""Adam for the engine's small nets, stepped with the EP estimate directly.

The world model and the value take one Adam step per EP update on nets of a few thousand weights, where
``torch.optim.Adam``'s per-step bookkeeping (``.grad`` handling, parameter groups, profiler hooks, device
grouping) costs several times the update itself. :class:`FusedAdam` keeps Adam's state in plain lists and calls
the same fused kernel ``torch.optim.Adam(fused=True)`` calls, so its arithmetic — and the weights it writes — are
``torch.optim.Adam``'s exactly (tested); where the fused kernel is not available it falls back to
``torch.optim.Adam``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

__all__ = ["FusedAdam"]


class FusedAdam:
    """Adam over a fixed list of parameters; :meth:`step` takes their gradients (no ``.grad`` is written).

    Args:
        params: The parameters (all on one device, one dtype).
        lr: Learning rate (each :meth:`step` may scale it).
        betas: Adam's ``(β₁, β₂)``.
        eps: Adam's ε.
    """

    def __init__(
        self,
        params: Iterable[nn.Parameter],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.params = list(params)
        if not self.params:
            raise ValueError("FusedAdam needs at least one parameter")
        self.lr, self.betas, self.eps = float(lr), (float(betas[0]), float(betas[1])), float(eps)
        p0 = self.params[0]
        self._fused = hasattr(torch, "_fused_adam_") and p0.device.type in ("cpu", "cuda")
        if self._fused:
            self.exp_avg = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
            self.exp_avg_sq = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
            # one step counter per parameter, float32 on the parameter's device, as torch.optim.Adam(fused=True)
            self.steps = [torch.zeros((), dtype=torch.float32, device=p.device) for p in self.params]
        else:
            self._torch = torch.optim.Adam(self.params, lr=self.lr, betas=self.betas, eps=self.eps)

    @torch.no_grad()
    def step(self, grads: Sequence[torch.Tensor], lr_scale: float = 1.0) -> None:
        """One Adam step with ``grads`` (one per parameter, in order) at learning rate ``lr · lr_scale``."""
        if len(grads) != len(self.params):
            raise ValueError(f"expected {len(self.params)} gradients, got {len(grads)}")
        lr = self.lr * lr_scale
        if not self._fused:
            for group in self._torch.param_groups:
                group["lr"] = lr
            for p, g in zip(self.params, grads):
                p.grad = g
            self._torch.step()
            for p in self.params:
                p.grad = None
            return
        torch._foreach_add_(self.steps, 1)
        torch._fused_adam_(
            self.params, list(grads), self.exp_avg, self.exp_avg_sq, [], self.steps,
            amsgrad=False, lr=lr, beta1=self.betas[0], beta2=self.betas[1], weight_decay=0.0, eps=self.eps,
            maximize=False, grad_scale=None, found_inf=None,
        )  # fmt: skip
