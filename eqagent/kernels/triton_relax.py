"""Triton fused layer update of the Hopfield fixed-point relaxation.

One launch computes, for a whole layer (and every ensemble member, grid axis 2)::

    s_l ← clip(c_l + ρ(s_{l−1}) W_{l−1} + ρ(s_{l+1}) W_lᵀ − β (s_l − y), low, high)

— both neighbour matmuls, the constant drive (bias + clamped neighbours), the MSE nudge and the projection
fused. For the clipping activations ``ρ(s) = s`` on the box, so the neighbour states are read as they are.

For small nets (world-model sizes: a chain of 2–3 free layers up to 128 wide after the clamped input),
:func:`persistent_relax` runs *all* T steps in one launch: each program loads its block of rows' constant
drives, states and the (member's) weights once, iterates on chip and writes the final states back.

Triton is optional: this module imports without it (``HAS_TRITON`` is then False), and
:mod:`eqagent.energy` dispatches here only for CUDA tensors (or when a test forces it under
``TRITON_INTERPRET=1``, which must be set before triton is imported). Tolerance against the torch path:
fp32 accumulation with IEEE-precision dots, agreement within 1e-5 in the tests.
"""

from __future__ import annotations

import math
import os

import torch

__all__ = ["HAS_TRITON", "available", "fused_layer_update", "persistent_relax", "persistent_supported"]

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


# ---------------------------------------------------------------------------------------------------------------
# Persistent kernel: every relaxation step in one launch, states on chip (small nets: world-model sizes).
PERSISTENT_MAX_WIDTH = 128
"""Widest layer the persistent kernel keeps on chip (padded to a power of two ≥ 16)."""

if HAS_TRITON:

    @triton.jit
    def _persistent_kernel(
        c1_ptr, c2_ptr, c3_ptr, wa_ptr, wb_ptr, s1_ptr, s2_ptr, s3_ptr, y_ptr, o1_ptr, o2_ptr, o3_ptr,
        nb, n1, n2, n3, steps,
        s_c1m, s_c1b, s_c1n, s_c2m, s_c2b, s_c2n, s_c3m, s_c3b, s_c3n,
        s_wam, s_wak, s_wan, s_wbm, s_wbk, s_wbn,
        s_s1m, s_s1b, s_s1n, s_s2m, s_s2b, s_s2n, s_s3m, s_s3b, s_s3n,
        s_ym, s_yb, s_yn,
        s_o1m, s_o1b, s_o1n, s_o2m, s_o2b, s_o2n, s_o3m, s_o3b, s_o3n,
        beta, low, high,
        THREE: tl.constexpr, NUDGE: tl.constexpr,
        BLOCK_B: tl.constexpr, N1: tl.constexpr, N2: tl.constexpr, N3: tl.constexpr,
    ):  # fmt: skip
        """A chain of 2 (or, with ``THREE``, 3) free layers f1–f2(–f3) with constant drives c1, c2(, c3), couplings
        ``W_a`` (f1–f2) and ``W_b`` (f2–f3); odd-then-even fixed-point steps; the last free layer may be nudged."""
        pid_b = tl.program_id(0)
        m = tl.program_id(1)
        rb = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
        mb = rb < nb
        r1, r2, r3 = tl.arange(0, N1), tl.arange(0, N2), tl.arange(0, N3)
        m1, m2, m3 = r1 < n1, r2 < n2, r3 < n3
        k1, k2 = mb[:, None] & m1[None, :], mb[:, None] & m2[None, :]
        c1 = tl.load(c1_ptr + m * s_c1m + rb[:, None] * s_c1b + r1[None, :] * s_c1n, mask=k1, other=0.0)
        c2 = tl.load(c2_ptr + m * s_c2m + rb[:, None] * s_c2b + r2[None, :] * s_c2n, mask=k2, other=0.0)
        f1 = tl.load(s1_ptr + m * s_s1m + rb[:, None] * s_s1b + r1[None, :] * s_s1n, mask=k1, other=0.0)
        f2 = tl.load(s2_ptr + m * s_s2m + rb[:, None] * s_s2b + r2[None, :] * s_s2n, mask=k2, other=0.0)
        wa = tl.load(wa_ptr + m * s_wam + r1[:, None] * s_wak + r2[None, :] * s_wan,
                     mask=m1[:, None] & m2[None, :], other=0.0)  # fmt: skip
        wa_t = tl.trans(wa)
        if THREE:
            k3 = mb[:, None] & m3[None, :]
            c3 = tl.load(c3_ptr + m * s_c3m + rb[:, None] * s_c3b + r3[None, :] * s_c3n, mask=k3, other=0.0)
            f3 = tl.load(s3_ptr + m * s_s3m + rb[:, None] * s_s3b + r3[None, :] * s_s3n, mask=k3, other=0.0)
            wb = tl.load(wb_ptr + m * s_wbm + r2[:, None] * s_wbk + r3[None, :] * s_wbn,
                         mask=m2[:, None] & m3[None, :], other=0.0)  # fmt: skip
            wb_t = tl.trans(wb)
            if NUDGE:
                y = tl.load(y_ptr + m * s_ym + rb[:, None] * s_yb + r3[None, :] * s_yn, mask=k3, other=0.0)
            for _ in range(steps):
                f1_new = c1 + tl.dot(f2, wa_t, input_precision="ieee")
                d3 = c3 + tl.dot(f2, wb, input_precision="ieee")
                if NUDGE:
                    d3 = d3 - beta * (f3 - y)
                f1 = tl.minimum(tl.maximum(f1_new, low), high)
                f3 = tl.minimum(tl.maximum(d3, low), high)
                d2 = c2 + tl.dot(f1, wa, input_precision="ieee") + tl.dot(f3, wb_t, input_precision="ieee")
                f2 = tl.minimum(tl.maximum(d2, low), high)
            tl.store(o3_ptr + m * s_o3m + rb[:, None] * s_o3b + r3[None, :] * s_o3n, f3, mask=k3)
        else:
            if NUDGE:
                y = tl.load(y_ptr + m * s_ym + rb[:, None] * s_yb + r2[None, :] * s_yn, mask=k2, other=0.0)
            for _ in range(steps):
                f1 = tl.minimum(tl.maximum(c1 + tl.dot(f2, wa_t, input_precision="ieee"), low), high)
                d2 = c2 + tl.dot(f1, wa, input_precision="ieee")
                if NUDGE:
                    d2 = d2 - beta * (f2 - y)
                f2 = tl.minimum(tl.maximum(d2, low), high)
        tl.store(o1_ptr + m * s_o1m + rb[:, None] * s_o1b + r1[None, :] * s_o1n, f1, mask=k1)
        tl.store(o2_ptr + m * s_o2m + rb[:, None] * s_o2b + r2[None, :] * s_o2n, f2, mask=k2)


def _pad(n: int) -> int:
    return max(16, 1 << (int(n) - 1).bit_length())


def persistent_supported(widths: list[int]) -> bool:
    """Whether a chain of free layers with these widths fits the persistent kernel (2 or 3 layers, on chip)."""
    return HAS_TRITON and len(widths) in (2, 3) and all(_pad(n) <= PERSISTENT_MAX_WIDTH for n in widths)


def persistent_relax(
    consts: list[torch.Tensor],
    states: list[torch.Tensor],
    couplings: list[torch.Tensor],
    low: float,
    high: float,
    steps: int,
    target: torch.Tensor | None = None,
    beta: float = 0.0,
) -> list[torch.Tensor]:
    """All ``steps`` fixed-point steps of a chain of 2 or 3 free layers in one launch.

    Layer ``i`` of the chain gets ``clip(consts[i] + f_{i−1} W_{i−1} + f_{i+1} W_iᵀ)`` (odd chain positions first,
    as in :meth:`eqagent.energy.EnergyNet.relax_step`), and the last one, with ``beta != 0``, also
    ``− β (f_last − target)`` (MSE nudge).

    Args:
        consts: ``([M,] B, n_i)`` constant drives (bias + clamped neighbours), one per chain layer.
        states: ``([M,] B, n_i)`` initial states (in the box).
        couplings: ``([M,] n_i, n_{i+1})`` weights between consecutive chain layers.
        low, high: Projection box.
        steps: Relaxation steps.
        target, beta: MSE nudge of the last chain layer.

    Returns:
        The chain's states after ``steps`` steps.
    """
    widths = [int(s.shape[-1]) for s in states]
    if not persistent_supported(widths):
        raise ValueError(
            f"persistent kernel supports chains of 2-3 layers of width <= {PERSISTENT_MAX_WIDTH}"
        )
    squeeze = states[0].dim() == 2
    c = [_as3(t).contiguous() for t in consts]
    s = [_as3(t) for t in states]
    w = [_as3(t) for t in couplings]
    m, nb = s[0].shape[0], s[0].shape[1]
    c = [t.expand(m, nb, t.shape[-1]) if t.shape[0] != m else t for t in c]
    out = [torch.empty((m, nb, n), dtype=s[0].dtype, device=s[0].device) for n in widths]
    three = len(widths) == 3
    nudge = beta != 0.0
    y = _as3(target) if nudge else None
    c3, s3, o3 = (c[2], s[2], out[2]) if three else (c[1], s[1], out[1])  # stand-ins when there are 2 layers
    wb = w[1] if three else w[0]
    yy = y if y is not None else s[-1]

    def st(t):
        return (0, *t.stride()[1:]) if t.shape[0] == 1 and m > 1 else t.stride()

    n3 = widths[2] if three else 1
    block_b = 16 if nb <= 16 else 32
    grid = (triton.cdiv(nb, block_b), m)
    _persistent_kernel[grid](
        c[0], c[1], c3, w[0], wb, s[0], s[1], s3, yy, out[0], out[1], o3,
        nb, widths[0], widths[1], n3, int(steps),
        *st(c[0]), *st(c[1]), *st(c3), *st(w[0]), *st(wb), *st(s[0]), *st(s[1]), *st(s3), *st(yy),
        *out[0].stride(), *out[1].stride(), *o3.stride(),
        float(beta), float(max(low, -3.0e38)), float(min(high, 3.0e38)),
        THREE=three, NUDGE=nudge, BLOCK_B=block_b,
        N1=_pad(widths[0]), N2=_pad(widths[1]), N3=_pad(n3),
    )  # fmt: skip
    return [o[0] for o in out] if squeeze else out
