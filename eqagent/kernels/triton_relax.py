"""Triton fused layer update of the Hopfield fixed-point relaxation.

One launch computes, for a whole layer (and every ensemble member, grid axis 2)::

    s_l ← clip(c_l + ρ(s_{l−1}) W_{l−1} + ρ(s_{l+1}) W_lᵀ − β (s_l − y), low, high)

— both neighbour matmuls, the constant drive (bias + clamped neighbours), the MSE nudge and the projection
fused. For the clipping activations ``ρ(s) = s`` on the box, so the neighbour states are read as they are.

Triton is optional: this module imports without it (``HAS_TRITON`` is then False), and
:mod:`eqagent.energy.hopfield` dispatches here only for CUDA tensors (or when a test forces it under
``TRITON_INTERPRET=1``, which must be set before triton is imported). Tolerance against the torch path:
fp32 accumulation with IEEE-precision dots, agreement within 1e-5 in the tests.
"""

from __future__ import annotations

import math
import os

import torch

__all__ = ["HAS_TRITON", "available", "fused_layer_update"]

try:  # triton is an optional accelerator dependency
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # pragma: no cover - depends on the machine
    HAS_TRITON = False


def available(device: torch.device | str | None = None) -> bool:
    """Whether the Triton path can run for tensors on ``device`` (CUDA, or the interpreter on CPU)."""
    if not HAS_TRITON:
        return False
    dev = torch.device(device) if device is not None else None
    if dev is not None and dev.type == "cuda":
        return torch.cuda.is_available()
    return os.environ.get("TRITON_INTERPRET") == "1"


if HAS_TRITON:

    @triton.jit
    def _fused_layer_kernel(
        c_ptr, a_ptr, w1_ptr, b_ptr, w2_ptr, s_ptr, y_ptr, out_ptr,
        nb, nn_, k1, k2,
        s_cm, s_cb, s_cn,
        s_am, s_ab, s_ak,
        s_w1m, s_w1k, s_w1n,
        s_bm, s_bb, s_bk,
        s_w2m, s_w2n, s_w2k,
        s_sm, s_sb, s_sn,
        s_ym, s_yb, s_yn,
        s_om, s_ob, s_on,
        beta, low, high,
        HAS_A: tl.constexpr, HAS_B: tl.constexpr, NUDGE: tl.constexpr,
        BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    ):  # fmt: skip
        pid_b = tl.program_id(0)
        pid_n = tl.program_id(1)
        m = tl.program_id(2)
        rb = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        mb = rb < nb
        mn = rn < nn_
        mask = mb[:, None] & mn[None, :]
        acc = tl.load(c_ptr + m * s_cm + rb[:, None] * s_cb + rn[None, :] * s_cn, mask=mask, other=0.0)
        acc = acc.to(tl.float32)
        if HAS_A:
            for k0 in range(0, k1, BLOCK_K):
                rk = k0 + tl.arange(0, BLOCK_K)
                mk = rk < k1
                a = tl.load(a_ptr + m * s_am + rb[:, None] * s_ab + rk[None, :] * s_ak,
                            mask=mb[:, None] & mk[None, :], other=0.0)  # fmt: skip
                w = tl.load(w1_ptr + m * s_w1m + rk[:, None] * s_w1k + rn[None, :] * s_w1n,
                            mask=mk[:, None] & mn[None, :], other=0.0)  # fmt: skip
                acc += tl.dot(a, w, input_precision="ieee")
        if HAS_B:
            for k0 in range(0, k2, BLOCK_K):
                rk = k0 + tl.arange(0, BLOCK_K)
                mk = rk < k2
                b = tl.load(b_ptr + m * s_bm + rb[:, None] * s_bb + rk[None, :] * s_bk,
                            mask=mb[:, None] & mk[None, :], other=0.0)  # fmt: skip
                wt = tl.load(w2_ptr + m * s_w2m + rn[None, :] * s_w2n + rk[:, None] * s_w2k,
                             mask=mk[:, None] & mn[None, :], other=0.0)  # fmt: skip
                acc += tl.dot(b, wt, input_precision="ieee")
        if NUDGE:
            s = tl.load(s_ptr + m * s_sm + rb[:, None] * s_sb + rn[None, :] * s_sn, mask=mask, other=0.0)
            y = tl.load(y_ptr + m * s_ym + rb[:, None] * s_yb + rn[None, :] * s_yn, mask=mask, other=0.0)
            acc = acc - beta * (s - y)
        acc = tl.minimum(tl.maximum(acc, low), high)
        tl.store(out_ptr + m * s_om + rb[:, None] * s_ob + rn[None, :] * s_on, acc, mask=mask)


def _as3(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else (t.unsqueeze(0) if t.dim() == 2 else t)


def fused_layer_update(
    const: torch.Tensor,
    below: torch.Tensor | None,
    w_below: torch.Tensor | None,
    above: torch.Tensor | None,
    w_above: torch.Tensor | None,
    low: float,
    high: float,
    state: torch.Tensor | None = None,
    target: torch.Tensor | None = None,
    beta: float = 0.0,
) -> torch.Tensor:
    """``clip(const + below @ w_below + above @ w_aboveᵀ − β (state − target), low, high)`` in one launch.

    Args:
        const: ``([M,] B, N)`` constant drive (bias + clamped neighbours).
        below, w_below: ``([M,] B, K1)`` and ``([M,] K1, N)``, or both ``None``.
        above, w_above: ``([M,] B, K2)`` and ``([M,] N, K2)``, or both ``None``.
        low, high: Projection box (``±inf`` for none).
        state, target, beta: MSE nudge of an output layer (``beta = 0``: none).
    """
    if not HAS_TRITON:
        raise RuntimeError("triton is not installed")
    squeeze = const.dim() == 2
    c = _as3(const)
    m, nb, n = c.shape
    a, w1, b, w2 = _as3(below), _as3(w_below), _as3(above), _as3(w_above)
    nudge = beta != 0.0
    s, y = (_as3(state), _as3(target)) if nudge else (None, None)
    out = torch.empty_like(c)

    def st(t, dims=3):
        if t is None:
            return (0,) * dims
        if t.shape[0] == 1 and m > 1:  # shared across members
            return (0, *t.stride()[1:])
        return t.stride()

    dummy = c
    k1 = w1.shape[-2] if w1 is not None else 0
    k2 = w2.shape[-1] if w2 is not None else 0
    block_b = 32 if nb > 16 else 16
    block_n = 32 if n > 16 else 16
    block_k = 32
    grid = (triton.cdiv(nb, block_b), triton.cdiv(n, block_n), m)
    _fused_layer_kernel[grid](
        c, a if a is not None else dummy, w1 if w1 is not None else dummy, b if b is not None else dummy,
        w2 if w2 is not None else dummy, s if s is not None else dummy, y if y is not None else dummy, out,
        nb, n, k1, k2,
        *st(c), *st(a), *st(w1), *st(b), *st(w2), *st(s), *st(y), *out.stride(),
        float(beta), float(max(low, -3.0e38)) if math.isinf(low) else float(low),
        float(min(high, 3.0e38)) if math.isinf(high) else float(high),
        HAS_A=a is not None, HAS_B=b is not None, NUDGE=nudge,
        BLOCK_B=block_b, BLOCK_N=block_n, BLOCK_K=block_k,
    )  # fmt: skip
    return out[0] if squeeze else out
