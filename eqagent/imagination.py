"""Imagined rollouts of an :class:`~eqagent.world_model.EPWorldModel`: every member × candidate, ``H`` steps.

Each imagined step is the energy's free phase (:func:`eqagent.energy.propagate`) with the weights rewritten once per
parameter update (exact algebra, float rounding aside):

* the first layer's action part and bias are precomputed for all steps at once;
* ``tanh(p) = 2σ(2p) − 1``: hidden layers carry ``u = σ(2p)`` and the affine ``2u − 1`` is folded into the next
  layer's weights (σ is several times cheaper than tanh on CPU);
* the output's Δobs columns are mapped to normalised-observation units, ``Δz = (σ_Δ·out + μ_Δ) / σ_obs``, so the
  state update is one add.

The rollout runs in normalised-observation space and equals stepping the free phase with
:meth:`~eqagent.world_model.EPWorldModel.predict_members` (tested to 1e-5). With two hidden layers the step loop
can run as one fused Triton launch (:mod:`eqagent.kernels.triton_imagine`, ``WorldModelConfig.imagine_backend``);
the precomputed action part, the fold and everything after the loop stay here.
"""

from __future__ import annotations

import torch

from eqagent.energy import propagate

__all__ = ["Imagination"]


class Imagination:
    """Folded weights of a world model and its rollout; the fold is rebuilt when a parameter or a normaliser
    changes (their tensor versions are the cache key)."""

    def __init__(self, world_model) -> None:
        self.wm = world_model
        self._key: tuple | None = None
        self._fold: tuple | None = None
        self.last_backend: str | None = None  # what the last rollout ran on ("torch" or "triton")

    def _current(self) -> tuple:
        wm = self.wm
        tensors = (*wm.energy.parameters(), *wm.obs_norm.buffers(), *wm.delta_norm.buffers())
        key = tuple(t._version for t in tensors) + tuple(id(t) for t in wm.energy.parameters())
        if key != self._key:
            self._key, self._fold = key, self._fold_weights()
        return self._fold

    def _fold_weights(self) -> tuple:
        wm = self.wm
        d = wm.obs_dim
        ws = [w.detach() for w in wm.energy.weights]
        bs = [b.detach().unsqueeze(-2) for b in wm.energy.biases]  # (M, 1, n)
        act = wm.config.activation
        if act == "tanh":
            gain, a, c, squash = 2.0, 2.0, -1.0, torch.sigmoid
        else:
            gain, a, c, squash = 1.0, 1.0, 0.0, (torch.relu if act == "relu" else torch.sigmoid)
        w1 = ws[0]  # (M, d + A, K1)
        w1a = (gain * w1[:, d:], gain * bs[0])
        rest: list = []
        for w, b in zip(ws[1:-1], bs[1:-1]):  # hidden → hidden: input h = a·u + c
            rest.append((gain * a * w, gain * (b + c * w.sum(-2, keepdim=True))))
        w_l, b_l = ws[-1], bs[-1]
        w_out, b_out = a * w_l, b_l + c * w_l.sum(-2, keepdim=True)
        o_std = wm.obs_norm.std.float()
        out_scale = wm.delta_norm.std.float() / o_std  # (d,)
        out_shift = wm.delta_norm.mean.float() / o_std
        w_out = torch.cat([w_out[..., :d] * out_scale, w_out[..., d:]], -1)
        b_out = torch.cat([b_out[..., :d] * out_scale + out_shift, b_out[..., d:]], -1)
        rest.append((w_out.contiguous(), b_out))
        return w1a, gain * w1[:, :d].contiguous(), rest, out_scale, out_shift, squash

    def backend(self, device: torch.device) -> str:
        """``"torch"``, ``"triton"``, or ``"autotune"`` (both can run: the faster at each shape, timed once and
        cached by :data:`eqagent.kernels.autotune.AUTOTUNER`) for this world model's config, net and ``device``."""
        from eqagent.kernels import triton_imagine

        choice = self.wm.config.imagine_backend
        squash = "relu" if self.wm.config.activation == "relu" else "sigmoid"
        fits = triton_imagine.supports(len(self.wm.energy.weights), squash)
        if choice == "torch" or (choice == "auto" and (device.type != "cuda" or not fits)):
            return "torch"
        if fits and triton_imagine.available(device):
            return "triton" if choice == "triton" else "autotune"
        if choice == "triton":
            raise RuntimeError(
                "imagine_backend='triton' needs Triton on CUDA (or TRITON_INTERPRET=1) and a world model with two "
                f"hidden layers, got hidden={self.wm.config.hidden} on {device}"
            )
        return "torch"

    def rollout(self, obs: torch.Tensor, enc: torch.Tensor) -> dict[str, torch.Tensor]:
        """Imagines from observations ``(N, d)`` along encoded action sequences ``(N, H, A)``; returns
        :meth:`~eqagent.world_model.EPWorldModel.imagine`'s dict."""
        wm = self.wm
        w1a, w1, rest, out_scale, out_shift, squash = self._current()
        n, h, a = enc.shape
        m, d = w1.shape[0], wm.obs_dim
        act_pre = torch.baddbmm(w1a[1], enc.transpose(0, 1).reshape(1, h * n, a).expand(m, -1, -1), w1a[0])
        act_pre = act_pre.view(
            m, h, n, -1
        )  # (M, H, N, K1): the first layer's action part and bias, every step
        o_mean, o_std = wm.obs_norm.mean.float(), wm.obs_norm.std.float()
        z = ((obs - o_mean) / o_std).unsqueeze(0).expand(m, n, d).contiguous()  # (M, N, d) normalised state
        backend = self.backend(obs.device)
        if backend == "torch":
            zs, outs = self._loop(z, act_pre, w1, rest, squash)
        else:
            from eqagent.kernels import triton_imagine

            (w2, b2), (w3, b3) = rest
            unit = "relu" if wm.config.activation == "relu" else "sigmoid"
            fused = lambda: triton_imagine.fused_rollout(z, act_pre, w1, w2, b2, w3, b3, unit)  # noqa: E731
            if backend == "autotune":
                from eqagent.kernels.autotune import AUTOTUNER

                key = (
                    "imagine",
                    tuple(act_pre.shape),
                    d,
                    tuple(w2.shape[1:]),
                    wm.out_dim,
                    unit,
                    str(obs.device),
                )
                loop = lambda: self._loop(z, act_pre, w1, rest, squash)  # noqa: E731
                backend = AUTOTUNER.choose(key, {"torch": loop, "triton": fused})
            zs, outs = fused() if backend == "triton" else self._loop(z, act_pre, w1, rest, squash)
        self.last_backend = backend
        raw_dz = (outs[..., :d] - out_shift) / out_scale  # (H, M, N, d): the energy's normalised Δobs output
        spread = ((raw_dz - raw_dz.mean(1, keepdim=True)) ** 2).mean((1, 3))  # (H, N): variance over members
        outs = outs.permute(1, 2, 0, 3)  # (M, N, H, d + 2)
        return {
            "obs": zs * o_std + o_mean,
            "reward": wm.reward_norm.denormalize(outs[..., d]),
            "term_prob": torch.sigmoid(outs[..., d + 1]),
            "disagreement": spread.T,
            "first_out": torch.cat([raw_dz[0], outs[:, :, 0, d:]], -1),
        }

    @staticmethod
    def _loop(z: torch.Tensor, act_pre: torch.Tensor, w1: torch.Tensor, rest: list, squash) -> tuple:
        """The torch step loop: ``zs`` ``(M, N, H + 1, d)`` and ``outs`` ``(H, M, N, O)`` (folded: [Δz, normalised
        reward, term logit])."""
        m, n, d = z.shape
        h = act_pre.shape[1]
        zs = torch.empty(m, n, h + 1, d, device=z.device, dtype=z.dtype)
        outs = torch.empty(h, m, n, rest[-1][0].shape[-1], device=z.device, dtype=z.dtype)
        zs[:, :, 0] = z
        last = len(rest) + 1

        def activate(l: int, pre: torch.Tensor) -> torch.Tensor:
            return pre if l == last else squash(pre)

        for t in range(h):  # one imagined step = the energy's free phase with the folded weights
            outs[t] = propagate(z.clamp(-10, 10), [(w1, act_pre[:, t]), *rest], activate)  # (M, N, d + 2)
            z = z + outs[t, ..., :d]
            zs[:, :, t + 1] = z
        return zs, outs
