"""Relaxation viewer: every layer's state, the energy and the cost at each relaxation step, free then nudged.

:func:`trace_relaxation` runs the free phase and one nudged phase one :func:`eqagent.relax.settle` step at a time
(the same dynamics as training, started from the same feed-forward sweep) and records the states, ``E`` and
``C``; :func:`render_relaxation` draws them as an animated GIF, a PNG strip and TensorBoard images.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from eqagent.apps.logging import log_image

from eqagent.costs import Cost
from eqagent.energy import LayeredEnergy
from eqagent.ep import EPConfig
from eqagent.relax import settle

__all__ = ["render_relaxation", "trace_relaxation"]


@torch.no_grad()
def trace_relaxation(
    net: LayeredEnergy,
    cost: Cost,
    x: torch.Tensor,
    target: torch.Tensor,
    config: EPConfig,
    beta: float | None = None,
) -> list[dict]:
    """Frames of a free phase (``config.free_steps``) then a nudged phase (``config.nudged_steps``, strength
    ``beta`` or ``config.beta``) for one input ``x`` ``(1, n_0)``.

    Returns:
        One dict per step (step 0 = the feed-forward start): ``phase``, ``step``, ``states`` (numpy, one per
        layer), ``output`` (the cost's output: the last layer, or the readout's class probabilities), ``energy``
        (``E``) and ``cost`` (``C`` at that state).
    """
    beta = config.beta if beta is None else beta
    states = net.feedforward(x)
    target = cost.check_target(target, states[-1])

    def frame(phase: str, t: int, s: list[torch.Tensor]) -> dict:
        out = cost.output(s[-1])[0]
        if out.shape != s[-1][0].shape:  # a readout: show its class probabilities
            out = torch.softmax(out, -1)
        return {"phase": phase, "step": t, "states": [v[0].numpy().copy() for v in s], "output": out.numpy().copy(),
                "energy": float(net.energy(s)[0]), "cost": float(cost.value(s[-1], target)[0])}  # fmt: skip

    frames = [frame("free", 0, states)]
    for t in range(1, config.free_steps + 1):
        states = settle(net, states, clamped=(0,), steps=1, mode=config.mode, eps=config.eps).states
        frames.append(frame("free", t, states))
    for t in range(1, config.nudged_steps + 1):
        states = settle(net, states, clamped=(0,), beta=beta, target=target, cost=cost, steps=1, mode=config.mode,
                        eps=config.eps).states  # fmt: skip
        frames.append(frame("nudged", t, states))
    return frames


def _as_image(v: np.ndarray) -> np.ndarray:
    """A layer's state as a near-square 2-D array (zero-padded)."""
    n = v.size
    side = math.isqrt(n)
    if side * side == n:
        return v.reshape(side, side)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    out = np.zeros(rows * cols, dtype=v.dtype)
    out[:n] = v
    return out.reshape(rows, cols)


def render_relaxation(frames: list[dict], out_prefix: str | Path, logger=None, strip_frames: int = 8) -> dict:
    """Writes ``{out_prefix}.gif`` (every step) and ``{out_prefix}.png`` (a strip of ``strip_frames`` steps);
    with an SB3 ``Logger`` (:func:`eqagent.apps.logging.run_logger`), also TensorBoard images ``relaxation/step`` (one per step).

    Returns:
        The paths written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.animation import PillowWriter

    out_prefix = Path(out_prefix)
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    readout = not np.array_equal(frames[0]["output"], frames[0]["states"][-1])
    panels = [*range(len(frames[0]["states"])), *(["output"] if readout else [])]
    n_layers = len(panels)

    def panel(f: dict, p) -> tuple[np.ndarray, str]:
        if p == "output":
            return f["output"][None], f"output ({f['output'].size})"
        return _as_image(f["states"][p]), f"layer {p} ({f['states'][p].size})"

    def show(ax, f: dict, p) -> str:
        """Draws panel ``p`` of frame ``f`` into ``ax``; returns its title."""
        img, title = panel(f, p)
        ax.imshow(
            img,
            cmap="gray",
            vmin=0,
            vmax=1,
            interpolation="nearest",
            aspect="auto" if p == "output" else None,
        )
        return title

    energies = [f["energy"] for f in frames]
    costs = [f["cost"] for f in frames]
    n_free = sum(f["phase"] == "free" for f in frames)

    def draw(fig, axes, i: int) -> None:
        f = frames[i]
        for p, ax in zip(panels, axes):
            ax.clear()
            ax.set_title(show(ax, f, p), fontsize=8)
            ax.axis("off")
        ax = axes[n_layers]
        ax.clear()
        ax.plot(energies, color="C0", label="energy E")
        ax.plot(costs, color="C1", label="cost C")
        ax.axvline(n_free - 0.5, color="k", ls=":", lw=1)
        ax.plot([i], [energies[i]], "o", color="C0")
        ax.plot([i], [costs[i]], "o", color="C1")
        ax.set_xlabel("relaxation step (free | nudged)", fontsize=8)
        ax.legend(fontsize=7)
        fig.suptitle(
            f"{f['phase']} phase, step {f['step']}: E = {f['energy']:.3f}, C = {f['cost']:.3f}", fontsize=9
        )

    fig, axes = plt.subplots(1, n_layers + 1, figsize=(2.4 * (n_layers + 1), 2.8))
    gif = out_prefix.with_suffix(".gif")
    writer = PillowWriter(fps=4)
    with writer.saving(fig, str(gif), dpi=80):
        for i in range(len(frames)):
            draw(fig, axes, i)
            writer.grab_frame()
            if logger is not None:
                fig.canvas.draw()
                rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3]
                log_image(logger, "relaxation/step", rgb, i, dataformats="HWC")
    plt.close(fig)
    picks = np.unique(np.linspace(0, len(frames) - 1, min(strip_frames, len(frames))).round().astype(int))
    fig, axes = plt.subplots(n_layers, len(picks), figsize=(1.6 * len(picks), 1.7 * n_layers), squeeze=False)
    for j, i in enumerate(picks):
        f = frames[i]
        for l, p in enumerate(panels):
            ax = axes[l][j]
            title = show(ax, f, p)
            ax.set_xticks([])
            ax.set_yticks([])
            if l == 0:
                ax.set_title(f"{f['phase']} {f['step']}\nE={f['energy']:.4g}\nC={f['cost']:.3g}", fontsize=7)
            if j == 0:
                ax.set_ylabel(title.split(" (")[0], fontsize=7)
    fig.tight_layout()
    png = out_prefix.with_suffix(".png")
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return {"gif": str(gif), "png": str(png), "frames": len(frames)}
