"""Imagined rollouts of an :class:`~eqagent.world_model.EPWorldModel`: every member × candidate, ``H`` steps.

Each imagined step is the energy's free phase (:func:`eqagent.energy.propagate`) with the weights rewritten once per
parameter update (exact algebra, float rounding aside):

* the first layer's action part and bias are precomputed for all steps at once;
* for the fused Triton kernel (sigmoid and ReLU units only), ``tanh(p) = 2σ(2p) − 1``: hidden layers carry
  ``u = σ(2p)`` and the affine ``2u − 1`` is folded into the next layer's weights; the torch loop applies the net's
  own activation (torch's tanh is cheaper than its sigmoid on this project's CPU: 11.6 vs 14.5 µs on (5, 128, 64));
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

_UNITS = {
    "tanh": torch.tanh_,
    "sigmoid": torch.sigmoid_,
    "relu": torch.relu_,
}  # in place: the loop owns its temporaries


class Imagination:
    """Folded weights of a world model and its rollout; the fold is rebuilt when a parameter or a normaliser
    changes (their tensor versions are the cache key)."""

    def __init__(self, world_model) -> None:
        self.wm = world_model
        self._key: tuple | None = None
        self._folds: dict[str, tuple] = {}
        self.last_backend: str | None = None  # what the last rollout ran on ("torch" or "triton")

    def _current(self, unit: str | None = None) -> tuple:
        """The weights for a step loop whose hidden units are ``unit`` (default: the net's own activation;
        ``"sigmoid"`` for a tanh net: the fold)."""
        wm = self.wm
        unit = unit or wm.config.activation
        params = (*wm.energy._w, *wm.energy._b)  # plain lists: iterating ``parameters()`` costs ~50 µs a call
        on, dn = wm.obs_norm, wm.delta_norm
        key = (*(t._version for t in params), *map(id, params), on.version, dn.version)
        if key != self._key:
            self._key, self._folds = key, {}
        if unit not in self._folds:
            self._folds[unit] = self._fold_weights(unit)
        return self._folds[unit]

    def _fold_weights(self, unit: str) -> tuple:
        wm = self.wm
        d = wm.obs_dim
        ws = [w.detach() for w in wm.energy.weights]
        bs = [b.detach().unsqueeze(-2) for b in wm.energy.biases]  # (M, 1, n)
        act = wm.config.activation
        if act == "tanh" and unit == "sigmoid":  # tanh(p) = 2σ(2p) − 1
            gain, a, c = 2.0, 2.0, -1.0
        elif unit == act:
            gain, a, c = 1.0, 1.0, 0.0
        else:
            raise ValueError(f"a {act} world model cannot be imagined with {unit} units")
        squash = _UNITS[unit]
        same = unit == act  # no affine to fold: skip the exact identities (1·w, b + 0·Σw)
        w1 = ws[0]  # (M, d + A, K1)
        w1a = (w1[:, d:], bs[0]) if same else (gain * w1[:, d:], gain * bs[0])
        # a discrete action's one-hot row picks one row of the action part: the first layer's action part plus
        # bias per action, (M, n, K1) (the same floats as the product: 1·w + 0·w' is exact)
        w1a = (*w1a, w1a[1] + w1a[0]) if wm.discrete else (*w1a, None)
        rest: list = []
        for w, b in zip(ws[1:-1], bs[1:-1]):  # hidden → hidden: input h = a·u + c
            rest.append((w, b) if same else (gain * a * w, gain * (b + c * w.sum(-2, keepdim=True))))
        w_l, b_l = ws[-1], bs[-1]
        w_out, b_out = (w_l, b_l) if same else (a * w_l, b_l + c * w_l.sum(-2, keepdim=True))
        o_std = wm.obs_norm.moments()[1]
        d_mean, d_std = wm.delta_norm.moments()
        out_scale = d_std / o_std  # (d,)
        out_shift = d_mean / o_std
        w_out = torch.cat([w_out[..., :d] * out_scale, w_out[..., d:]], -1)
        b_out = torch.cat([b_out[..., :d] * out_scale + out_shift, b_out[..., d:]], -1)
        rest.append((w_out.contiguous(), b_out))
        return w1a, (w1[:, :d] if same else gain * w1[:, :d]).contiguous(), rest, out_scale, out_shift, squash

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

    def rollout(
        self, obs: torch.Tensor, actions: torch.Tensor, disagreement: bool = True, split: bool = False
    ) -> dict[str, torch.Tensor]:
        """Imagines from observations ``(N, d)`` along action sequences: indices ``(N, H)`` (int64) of a discrete
        world model, or encoded actions ``(N, H, A)``; returns :meth:`~eqagent.world_model.EPWorldModel.imagine`'s
        dict (without ``disagreement`` when not asked for).

        With ``split`` the members share the sequences out instead of each imagining all of them: sequence ``i`` is
        imagined by member ``i // R`` alone (``R = ⌈N / M⌉``; the last member's block is padded by repeating the
        last sequence, and the padding dropped), and the per-member outputs come back as one ``(1, N, …)`` member
        axis. ``M`` times less imagined work; there is no disagreement to compute."""
        wm = self.wm
        n_seq, h = actions.shape[:2]
        m, d = wm.config.members, wm.obs_dim
        if split and disagreement:
            raise ValueError("a split rollout imagines each sequence with one member: it has no disagreement")
        o_mean, o_std = wm.obs_norm.moments()
        if split:  # member j takes sequences j·R … (j + 1)·R − 1
            n = -(-n_seq // m)  # R
            pad = m * n - n_seq
            if pad:
                obs = torch.cat([obs, obs[-1:].expand(pad, d)])
                actions = torch.cat([actions, actions[-1:].expand(pad, *actions.shape[1:])])
            z = ((obs - o_mean) / o_std).view(m, n, d)  # (M, R, d) normalised state
            own_actions = actions.view(m, n, *actions.shape[1:])  # (M, R, H[, A])
        else:
            n = n_seq  # (M, N, d) normalised state
            z = ((obs - o_mean) / o_std).unsqueeze(0).expand(m, n, d).contiguous()
        own = self._current()

        def prepare(folded: tuple) -> tuple:
            w1a, w1, rest, _, _, squash = folded
            if split:  # each member's own sequences, (M, H·R, K1)
                steps = own_actions.transpose(1, 2).reshape(m, h * n, *actions.shape[2:])
                if actions.dim() == 2:  # a row of the member's per-action table
                    act_pre = w1a[2][torch.arange(m, device=steps.device)[:, None], steps]
                else:
                    act_pre = torch.baddbmm(w1a[1], steps, w1a[0])
            elif actions.dim() == 2:  # discrete: one row of the per-action table per step, (M, H·N, K1)
                act_pre = w1a[2].index_select(1, actions.T.reshape(-1))
            else:
                a = actions.shape[-1]
                act_pre = torch.baddbmm(
                    w1a[1], actions.transpose(0, 1).reshape(1, h * n, a).expand(m, -1, -1), w1a[0]
                )
            # (M, H, N, K1): the first layer's action part and bias, every step
            return act_pre.view(m, h, n, -1), w1, rest, squash

        def loop() -> tuple:
            act_pre, w1, rest, squash = prepare(own)
            return self._loop(z, act_pre, w1, rest, squash)

        backend = self.backend(obs.device)
        if backend != "torch":
            from eqagent.kernels import triton_imagine

            unit = "relu" if wm.config.activation == "relu" else "sigmoid"

            def fused() -> tuple:
                act_pre, w1, ((w2, b2), (w3, b3)), _ = prepare(self._current(unit))
                return triton_imagine.fused_rollout(z, act_pre, w1, w2, b2, w3, b3, unit)

            if backend == "autotune":
                from eqagent.kernels.autotune import AUTOTUNER

                k2 = wm.config.hidden[-1]
                key = ("imagine", (m, h, n, wm.config.hidden[0]), d, (wm.config.hidden[0], k2), wm.out_dim, unit,
                       str(obs.device))  # fmt: skip
                backend = AUTOTUNER.choose(key, {"torch": loop, "triton": fused})
        zs, outs = fused() if backend == "triton" else loop()
        out_scale, out_shift = own[3:5]
        self.last_backend = backend
        # the energy's normalised Δobs output: every step's for the disagreement, (H, M, N, d), else the first's
        raw_dz = (
            (outs[..., :d] - out_shift) / out_scale
            if disagreement
            else (outs[0, ..., :d] - out_shift) / out_scale
        )
        first_dz = raw_dz[0] if disagreement else raw_dz
        result = {}
        if disagreement:
            result["disagreement"] = ((raw_dz - raw_dz.mean(1, keepdim=True)) ** 2).mean((1, 3)).T  # (N, H)
        outs = outs.permute(1, 2, 0, 3)  # (M, N, H, d + 2)
        if split:  # one member per sequence: (1, N, …) in the sequences' order, the padding dropped
            zs = zs.reshape(1, m * n, h + 1, d)[:, :n_seq]
            outs = outs.reshape(1, m * n, h, -1)[:, :n_seq]
            first_dz = first_dz.reshape(1, m * n, d)[:, :n_seq]
        return {
            "obs": zs * o_std + o_mean,
            "reward": wm.reward_norm.denormalize(outs[..., d]),
            "term_prob": torch.sigmoid(outs[..., d + 1]),
            **result,
            "first_out": torch.cat([first_dz, outs[:, :, 0, d:]], -1),
        }

    @staticmethod
    def _loop(z: torch.Tensor, act_pre: torch.Tensor, w1: torch.Tensor, rest: list, squash) -> tuple:
        """The torch step loop: ``zs`` ``(M, N, H + 1, d)`` and ``outs`` ``(H, M, N, O)`` (folded: [Δz, normalised
        reward, term logit])."""
        m, n, d = z.shape
        h = act_pre.shape[1]
        zs = torch.empty(
            h + 1, m, n, d, device=z.device, dtype=z.dtype
        )  # time-major: one contiguous slab per step
        outs = torch.empty(h, m, n, rest[-1][0].shape[-1], device=z.device, dtype=z.dtype)
        zs[0] = z
        last = len(rest) + 1
        z_t, out_t, act_t, dz_t = zs.unbind(0), outs.unbind(0), act_pre.unbind(1), outs[..., :d].unbind(0)

        def activate(l: int, pre: torch.Tensor) -> torch.Tensor:
            return pre if l == last else squash(pre)

        for t in range(h):  # one imagined step = the energy's free phase with the folded weights
            propagate(z_t[t].clamp(-10, 10), [(w1, act_t[t]), *rest], activate, out=out_t[t])  # (M, N, d + 2)
            torch.add(z_t[t], dz_t[t], out=z_t[t + 1])
        return zs.permute(1, 2, 0, 3), outs
