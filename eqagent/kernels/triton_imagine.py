"""Triton fused imagined rollout: every horizon step of every member × candidate in one launch.

The planner's imagined rollout (:class:`eqagent.imagination.Imagination`) is ``H`` free phases of the world
model's energy with folded weights. With two hidden layers (the default world model) one step is::

    u1 = σ(clip(z, −10, 10) W1 + a_t)      # a_t: the first layer's action part and bias, precomputed
    u2 = σ(u1 W2 + b2)
    o  = u2 W3 + b3                         # [Δz, normalised reward, termination logit]
    z ← z + o[:d]

(σ is the sigmoid for tanh nets — the fold ``tanh(p) = 2σ(2p) − 1`` — or the ReLU.) The kernel keeps the three
weight matrices of one member in registers/shared memory for all ``H`` steps and a block of candidates' states
on chip; per step it reads ``a_t`` and writes ``z`` and ``o``. Grid: (candidate blocks, members).

Dims below 16 (``d``, ``d + 2``) are zero-padded to Triton's minimum dot size; padded weight rows and columns are
zero, so padded units never reach a real one. Dots run in IEEE float32 (no TF32), so the result matches the torch
path within the float32 error bound the tests compute (:func:`rollout_error_bound`).

Triton is optional: without it (or without CUDA, outside the interpreter) :func:`available` is False and the
torch path runs.
"""

from __future__ import annotations

import torch

from eqagent.kernels.triton_relax import HAS_TRITON, available

__all__ = ["available", "fused_rollout", "rollout_error_bound", "supports"]

if HAS_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def _rollout_kernel(
        z0_ptr, a_ptr, w1_ptr, w2_ptr, b2_ptr, w3_ptr, b3_ptr, zs_ptr, out_ptr,
        n, d, k1, k2, o, horizon,
        s_z0m, s_z0n,
        s_am, s_at, s_an,
        s_w1m, s_w2m, s_b2m, s_w3m, s_b3m,
        s_zsm, s_zsn, s_zst,
        s_ot, s_om, s_on,
        RELU: tl.constexpr, BLOCK_N: tl.constexpr, DP: tl.constexpr, K1P: tl.constexpr, K2P: tl.constexpr,
        OP: tl.constexpr,
    ):  # fmt: skip
        pid = tl.program_id(0)
        m = tl.program_id(1)
        rn = pid * BLOCK_N + tl.arange(0, BLOCK_N)
        rd = tl.arange(0, DP)
        r1 = tl.arange(0, K1P)
        r2 = tl.arange(0, K2P)
        ro = tl.arange(0, OP)
        mn, md, m1, m2, mo = rn < n, rd < d, r1 < k1, r2 < k2, ro < o
        # weights of member m, contiguous (rows × cols), zero outside the real sizes
        w1 = tl.load(
            w1_ptr + m * s_w1m + rd[:, None] * k1 + r1[None, :], mask=md[:, None] & m1[None, :], other=0.0
        )
        w2 = tl.load(
            w2_ptr + m * s_w2m + r1[:, None] * k2 + r2[None, :], mask=m1[:, None] & m2[None, :], other=0.0
        )
        b2 = tl.load(b2_ptr + m * s_b2m + r2, mask=m2, other=0.0)
        w3 = tl.load(
            w3_ptr + m * s_w3m + r2[:, None] * o + ro[None, :], mask=m2[:, None] & mo[None, :], other=0.0
        )
        b3 = tl.load(b3_ptr + m * s_b3m + ro, mask=mo, other=0.0)
        z = tl.load(
            z0_ptr + m * s_z0m + rn[:, None] * s_z0n + rd[None, :], mask=mn[:, None] & md[None, :], other=0.0
        )
        tl.store(zs_ptr + m * s_zsm + rn[:, None] * s_zsn + rd[None, :], z, mask=mn[:, None] & md[None, :])
        dz_cols = ro < d
        for t in range(horizon):
            zc = tl.minimum(tl.maximum(z, -10.0), 10.0)
            a = tl.load(a_ptr + m * s_am + t * s_at + rn[:, None] * s_an + r1[None, :],
                        mask=mn[:, None] & m1[None, :], other=0.0)  # fmt: skip
            p1 = tl.dot(zc, w1, input_precision="ieee") + a
            if RELU:
                u1 = tl.maximum(p1, 0.0)
            else:
                u1 = 1.0 / (1.0 + tl.exp(-p1))
            p2 = tl.dot(u1, w2, input_precision="ieee") + b2[None, :]
            if RELU:
                u2 = tl.maximum(p2, 0.0)
            else:
                u2 = 1.0 / (1.0 + tl.exp(-p2))
            out = tl.dot(u2, w3, input_precision="ieee") + b3[None, :]  # (BLOCK_N, OP)
            tl.store(out_ptr + t * s_ot + m * s_om + rn[:, None] * s_on + ro[None, :], out,
                     mask=mn[:, None] & mo[None, :])  # fmt: skip
            # z gains the Δz columns of out: (BLOCK_N, OP) → (BLOCK_N, DP) through a 0/1 selection matrix
            sel = tl.where((ro[:, None] == rd[None, :]) & dz_cols[:, None], 1.0, 0.0)
            z = z + tl.dot(tl.where(dz_cols[None, :], out, 0.0), sel, input_precision="ieee")
            tl.store(zs_ptr + m * s_zsm + rn[:, None] * s_zsn + (t + 1) * s_zst + rd[None, :], z,
                     mask=mn[:, None] & md[None, :])  # fmt: skip


def _pad(x: int) -> int:
    return max(16, 1 << (x - 1).bit_length())


def supports(n_layers: int, activation: str) -> bool:
    """Whether the fused rollout covers a folded net of ``n_layers`` weight layers with ``activation`` units."""
    return n_layers == 3 and activation in ("sigmoid", "relu")


def fused_rollout(
    z0: torch.Tensor,
    act_pre: torch.Tensor,
    w1: torch.Tensor,
    w2: torch.Tensor,
    b2: torch.Tensor,
    w3: torch.Tensor,
    b3: torch.Tensor,
    activation: str = "sigmoid",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The rollout of the module docstring in one launch.

    Args:
        z0: Normalised start states ``(M, N, d)``.
        act_pre: First-layer action part + bias per step ``(M, H, N, K1)``.
        w1: ``(M, d, K1)``; w2, b2: ``(M, K1, K2)``, ``(M, 1, K2)``; w3, b3: ``(M, K2, O)``, ``(M, 1, O)``.
        activation: ``sigmoid`` or ``relu``.

    Returns:
        ``zs`` ``(M, N, H + 1, d)`` (the start state first) and ``outs`` ``(H, M, N, O)``.
    """
    if not HAS_TRITON:
        raise RuntimeError("triton is not installed")
    if activation not in ("sigmoid", "relu"):
        raise ValueError(f"fused_rollout supports sigmoid and relu units, got {activation!r}")
    m, n, d = z0.shape
    h, k1 = act_pre.shape[1], act_pre.shape[-1]
    k2, o = w2.shape[-1], w3.shape[-1]
    if (
        act_pre.shape != (m, h, n, k1)
        or w1.shape != (m, d, k1)
        or w2.shape != (m, k1, k2)
        or w3.shape != (m, k2, o)
    ):
        raise ValueError(
            f"inconsistent shapes: z0 {tuple(z0.shape)}, act_pre {tuple(act_pre.shape)}, w1 {tuple(w1.shape)}, "
            f"w2 {tuple(w2.shape)}, w3 {tuple(w3.shape)}"
        )
    if o < d:
        raise ValueError(f"the output ({o}) must hold the Δz columns ({d})")
    z0, act_pre = z0.contiguous().float(), act_pre.contiguous().float()
    w1, w2, w3 = (w.contiguous().float() for w in (w1, w2, w3))
    b2, b3 = b2.reshape(m, k2).contiguous().float(), b3.reshape(m, o).contiguous().float()
    zs = torch.empty(m, n, h + 1, d, device=z0.device)
    outs = torch.empty(h, m, n, o, device=z0.device)
    block_n = 32 if n > 16 else 16
    grid = (triton.cdiv(n, block_n), m)
    _rollout_kernel[grid](
        z0, act_pre, w1, w2, b2, w3, b3, zs, outs,
        n, d, k1, k2, o, h,
        z0.stride(0), z0.stride(1),
        act_pre.stride(0), act_pre.stride(1), act_pre.stride(2),
        w1.stride(0), w2.stride(0), b2.stride(0), w3.stride(0), b3.stride(0),
        zs.stride(0), zs.stride(1), zs.stride(2),
        outs.stride(0), outs.stride(1), outs.stride(2),
        RELU=activation == "relu", BLOCK_N=block_n, DP=_pad(d), K1P=_pad(k1), K2P=_pad(k2), OP=_pad(o),
    )  # fmt: skip
    return zs, outs


U32 = 2.0**-24  # float32 unit roundoff


def _gamma(k: int) -> float:
    """Higham's γ_k: a float32 sum of k products differs from the exact one by ≤ γ_k · Σ|products|."""
    return k * U32 / (1 - k * U32)


def rollout_error_bound(
    z0, act_pre, w1, w2, b2, w3, b3, activation: str = "sigmoid"
) -> tuple[torch.Tensor, torch.Tensor]:
    """First-order bound on how far a float32 evaluation of the rollout can be from exact arithmetic, per entry
    of ``zs`` and ``outs`` (two float32 evaluations differ by at most twice this).

    Propagated in float64 alongside the exact-arithmetic values: a dot of k terms plus a bias adds
    γ_{k+1}·(|x||W| + |b|) and carries the input's bound through |W|; σ is ¼-Lipschitz (ReLU 1) and adds 4u of
    its value (exp, add, divide); the clip is 1-Lipschitz; the state update adds u of its value.
    """
    f = lambda t: t.detach().double()  # noqa: E731
    z, a, w1, w2, b2, w3, b3 = map(f, (z0, act_pre, w1, w2, b2, w3, b3))
    d, k1, k2 = z.shape[-1], w1.shape[-1], w2.shape[-1]
    lip, c_act = (1.0, 0.0) if activation == "relu" else (0.25, 4 * U32)
    act = torch.relu if activation == "relu" else torch.sigmoid
    ez = torch.zeros_like(z)
    zs_b, outs_b = [ez], []
    for t in range(a.shape[1]):
        zc = z.clamp(-10, 10)
        at = a[:, t]
        p1 = zc @ w1 + at
        e1 = ez @ w1.abs() + _gamma(d + 1) * (zc.abs() @ w1.abs() + at.abs())
        u1 = act(p1)
        eu1 = lip * e1 + c_act * u1.abs()
        p2 = u1 @ w2 + b2
        e2 = eu1 @ w2.abs() + _gamma(k1 + 1) * (u1.abs() @ w2.abs() + b2.abs())
        u2 = act(p2)
        eu2 = lip * e2 + c_act * u2.abs()
        out = u2 @ w3 + b3
        eo = eu2 @ w3.abs() + _gamma(k2 + 1) * (u2.abs() @ w3.abs() + b3.abs())
        z = z + out[..., :d]
        ez = ez + eo[..., :d] + U32 * z.abs()
        zs_b.append(ez)
        outs_b.append(eo)
    return torch.stack(zs_b, 2), torch.stack(outs_b, 0)
