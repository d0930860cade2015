"""Dreaming: the classifier's energy net run backwards — clamp a label, free the image, relax.

:class:`DreamerNet` is one layered Hopfield energy ``image – hidden – label`` (hard-sigmoid units, an input bias)
trained by EP in both directions on the same weights:

* **classify** — clamp the image, nudge the label layer toward the one-hot label (the usual EP step);
* **dream** — clamp the one-hot label, leave image and hidden free, nudge the image layer toward the real image.

Because the energy is symmetric in its layers, the dream direction is the same net read in reverse: a mirrored
:class:`~eqagent.energy.EnergyNet` whose weights are transposed *views* of the classifier's (no copy), so the
generative EP step runs through the same engine (``ep_gradients``) and its gradients land on the shared weights.
:meth:`DreamerNet.dream` is the same relaxation as classification (:func:`eqagent.relax.settle`) with a different
clamp: label clamped, image free, started from a random image (different starts give different dreams).

A label alone settles to one equilibrium image (the class prototype). For varied dreams the net can also dream from a
*hidden code*: with ``recon_weight > 0`` a third EP step trains the image layer to reconstruct the image from the
first hidden layer's perception equilibrium (hidden clamped, image free and nudged toward the image: the image's
only neighbour is that layer, so this is the same energy with another clamp); :class:`CodeBank` keeps a
class-conditional mixture of Gaussians over those codes (per class, k-means clusters, each with its mean and a few
principal directions), and
:meth:`DreamerNet.decode` relaxes the image with a sampled code clamped.

The classifier's hidden layer keeps what separates the classes and drops the rest (stroke width, slant), so images
decoded from its codes are thin prototypes. :class:`DreamAutoencoder` is a second energy net
``image – code`` trained by EP only to reconstruct images; its codes keep what the images look like, and dreams
decoded from a :class:`CodeBank` over them are much closer to real digits (the generator of deep generative
replay, here an EP net).

:class:`GenerativeEPClassifier` turns the dreamers around: one :class:`DreamAutoencoder` per class, each trained
only on its own class, and an image is labelled with the class whose net reconstructs it at the lowest energy
(a generative classifier: learning a new class trains a new net and leaves the old ones untouched, so nothing is
forgotten and nothing needs replaying).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from eqagent.costs import MSECost
from eqagent.energy import EnergyNet
from eqagent.ep import EPConfig, ep_gradients, free_phase
from eqagent.relax import settle

__all__ = ["CodeBank", "DreamAutoencoder", "DreamerConfig", "DreamerNet", "GenerativeEPClassifier"]


@dataclass
class DreamerConfig:
    """Settings of :class:`DreamerNet`.

    Attributes:
        hidden: Hidden layer sizes.
        beta: EP nudging strength (symmetric ±β).
        free_steps: Free-phase relaxation steps.
        nudged_steps: Nudged-phase relaxation steps.
        dream_weight: Weight of the generative (dream-direction) EP gradient relative to the classification one.
        dream_steps: Relaxation steps of :meth:`DreamerNet.dream`.
        label_copies: Units per label in the label layer (a population code: a clamped label then drives the
            hidden layer ``label_copies`` times as strongly; the class score is the copies' mean).
        recon_weight: Weight of the reconstruction EP gradient (first hidden layer clamped at its perception
            equilibrium, image free, nudged toward the image); 0 skips it. Needed by :meth:`DreamerNet.decode`.
        seed: Initialisation seed.
    """

    hidden: tuple[int, ...] = (500,)
    beta: float = 0.5
    free_steps: int = 20
    nudged_steps: int = 8
    dream_weight: float = 1.0
    dream_steps: int = 40
    label_copies: int = 1
    recon_weight: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.hidden or any(int(h) < 1 for h in self.hidden):
            raise ValueError(f"hidden must list positive sizes, got {self.hidden}")
        if self.label_copies < 1:
            raise ValueError(f"label_copies must be >= 1, got {self.label_copies}")
        if not self.beta > 0 or self.dream_weight < 0 or self.free_steps < 1 or self.dream_steps < 1:
            raise ValueError("beta must be > 0, dream_weight >= 0, free_steps and dream_steps >= 1")
        if not self.recon_weight >= 0:
            raise ValueError(f"recon_weight must be >= 0, got {self.recon_weight}")


def _mirror(net: EnergyNet) -> EnergyNet:
    """``net`` read from its last layer to its first: same parameters (transposed views), reversed layers."""
    sizes = net.sizes[::-1]
    rev = EnergyNet(
        sizes, activation=net.activations[0], input_activation=net.activations[-1], input_bias=True
    )
    rev.weights = nn.ParameterList([nn.Parameter(w.data.transpose(-1, -2)) for w in reversed(net.weights)])
    rev.biases = nn.ParameterList([nn.Parameter(b.data) for b in reversed(net.biases)])
    rev.activations = net.activations[::-1]
    return rev


def _decoder(net: EnergyNet) -> EnergyNet:
    """The image layer and its only neighbour (first hidden layer) of ``net`` as a 2-layer net ``hidden → image``
    whose parameters are views of ``net``'s (the hidden layer is its clamped input)."""
    dec = EnergyNet(
        [net.sizes[1], net.sizes[0]],
        activation=net.activations[0],
        input_activation=net.activations[1],
        input_bias=True,
    )
    dec.weights = nn.ParameterList([nn.Parameter(net.weights[0].data.transpose(-1, -2))])
    dec.biases = nn.ParameterList([nn.Parameter(net.biases[1].data), nn.Parameter(net.biases[0].data)])
    dec.activations = [net.activations[1], net.activations[0]]
    return dec


def _check_images(x: torch.Tensor, in_dim: int) -> torch.Tensor:
    x = torch.as_tensor(x, dtype=torch.float32)
    if x.dim() != 2 or x.shape[1] != in_dim:
        raise ValueError(f"images must be (B, {in_dim}), got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("images contain NaN or inf")
    return x


@torch.no_grad()
def _decode(dec: EnergyNet, codes: torch.Tensor) -> torch.Tensor:
    """Images ``(B, n_image)`` relaxed by the :func:`_decoder` view ``dec`` with its code layer clamped to
    ``codes``: the image's only neighbour is the clamped layer, so one fixed-point step reaches the equilibrium."""
    codes = dec.check_layer(0, torch.as_tensor(codes, dtype=torch.float32), "codes")
    start = torch.full((len(codes), dec.sizes[1]), 0.5)
    return settle(dec, [codes, start], clamped=(0,), steps=1).states[1]


def _recon_gradients(
    net: EnergyNet, dec: EnergyNet, cost: MSECost, codes: torch.Tensor, x: torch.Tensor, ep: EPConfig
) -> tuple[dict[nn.Parameter, torch.Tensor], float]:
    """EP gradients of reconstructing ``x`` from ``codes`` (code layer clamped, image free and nudged toward
    ``x``) through the :func:`_decoder` view ``dec``, mapped onto ``net``'s own parameters; also the free cost."""
    rec = ep_gradients(dec, cost, codes, x, ep)
    grads = {
        net.weights[0]: rec.grads[dec.weights[0]].transpose(-1, -2),
        net.biases[0]: rec.grads[dec.biases[1]],
    }
    return grads, rec.loss


class CodeBank:
    """A class-conditional mixture of Gaussians over hidden codes: the latent prior that :meth:`DreamerNet.decode`
    dreams from.

    Per class, :meth:`fit` splits the codes into ``components`` clusters (k-means, Lloyd iterations from distinct
    codes drawn with the bank's seed) and keeps, per cluster, its weight (share of the class's codes), mean and
    ``rank`` leading principal directions with their standard deviations: ``components · ((rank + 1) · hidden +
    rank + 1)`` floats a class, no codes or images. :meth:`sample` picks a cluster by weight and draws
    ``mean + Σ_k z_k σ_k v_k`` with ``z ~ N(0, 1)``, clipped to ``[low, high]`` (the hidden units' box). With
    ``components=1`` this is one Gaussian per class.

    Args:
        rank: Principal directions kept per cluster.
        components: Clusters per class (fewer when a class has fewer codes).
        low, high: Box of the hidden units.
        seed: Seed of the k-means initialisation.
        kmeans_iters: Lloyd iterations.
    """

    def __init__(
        self,
        rank: int = 20,
        components: int = 1,
        low: float = 0.0,
        high: float = 1.0,
        seed: int = 0,
        kmeans_iters: int = 15,
    ) -> None:
        if rank < 0:
            raise ValueError(f"rank must be >= 0, got {rank}")
        if components < 1:
            raise ValueError(f"components must be >= 1, got {components}")
        if kmeans_iters < 0:
            raise ValueError(f"kmeans_iters must be >= 0, got {kmeans_iters}")
        self.rank, self.components, self.low, self.high = int(rank), int(components), float(low), float(high)
        self.kmeans_iters = int(kmeans_iters)
        self._gen = torch.Generator().manual_seed(int(seed))
        # per class: weights (K,), means (K, H), directions (K, R, H), standard deviations (K, R)
        self._stats: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    @property
    def classes(self) -> list[int]:
        return sorted(self._stats)

    def _clusters(self, h: torch.Tensor) -> torch.Tensor:
        """k-means assignment ``(n,)`` of the codes ``h`` ``(n, H)`` to at most ``components`` clusters."""
        k = min(self.components, len(h))
        if k == 1:
            return torch.zeros(len(h), dtype=torch.long)
        centres = h[torch.randperm(len(h), generator=self._gen)[:k]].clone()  # (K, H)
        assign = torch.cdist(h, centres).argmin(1)
        for _ in range(self.kmeans_iters):
            counts = torch.bincount(assign, minlength=k).unsqueeze(1)  # (K, 1)
            sums = torch.zeros_like(centres).index_add_(0, assign, h)
            centres = torch.where(counts > 0, sums / counts.clamp_min(1), centres)  # empty clusters stay put
            new = torch.cdist(h, centres).argmin(1)
            if torch.equal(new, assign):
                break
            assign = new
        return assign

    def fit(self, codes: torch.Tensor, labels: torch.Tensor) -> None:
        """(Re)fits the classes present in ``labels`` to their ``codes`` ``(B, hidden)``; other classes are kept."""
        codes = torch.as_tensor(codes, dtype=torch.float32)
        labels = torch.as_tensor(labels).long().reshape(-1)
        if codes.dim() != 2 or len(codes) != len(labels):
            raise ValueError(f"codes must be (B, hidden) with one label each, got {tuple(codes.shape)} and "
                             f"{len(labels)} labels")  # fmt: skip
        if not torch.isfinite(codes).all():
            raise ValueError("codes contain NaN or inf")
        hidden = codes.shape[1]
        for c in torch.unique(labels).tolist():
            h = codes[labels == c]  # (n, H)
            assign = self._clusters(h)
            weights, means, dirs, sds = [], [], [], []
            for j in torch.unique(assign).tolist():
                hj = h[assign == j]  # (n_j, H)
                mean = hj.mean(0)
                d = torch.zeros(self.rank, hidden)
                sd = torch.zeros(self.rank)
                if len(hj) > 1 and self.rank:
                    _, sv, vt = torch.linalg.svd(hj - mean, full_matrices=False)
                    r = min(self.rank, len(sv))
                    d[:r], sd[:r] = vt[:r], sv[:r] / (len(hj) - 1) ** 0.5
                weights.append(float(len(hj)))
                means.append(mean)
                dirs.append(d)
                sds.append(sd)
            self._stats[int(c)] = (
                torch.tensor(weights),
                torch.stack(means),
                torch.stack(dirs),
                torch.stack(sds),
            )

    def sample(self, labels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Codes ``(B, hidden)`` drawn from the classes' mixtures."""
        labels = torch.as_tensor(labels).long().reshape(-1)
        missing = sorted(set(labels.tolist()) - set(self._stats))
        if missing:
            raise ValueError(f"no codes fitted for classes {missing}")
        hidden = next(iter(self._stats.values()))[1].shape[1]
        out = torch.empty(len(labels), hidden)
        for c in torch.unique(labels).tolist():
            weights, means, dirs, sds = self._stats[c]
            rows = (labels == c).nonzero().flatten()
            if len(weights) == 1:  # one Gaussian: no cluster draw
                z = torch.randn(len(rows), self.rank, generator=generator)  # (n, R)
                out[rows] = means[0] + (z * sds[0]) @ dirs[0]
                continue
            comp = torch.multinomial(weights, len(rows), replacement=True, generator=generator)  # (n,)
            z = torch.randn(len(rows), self.rank, generator=generator) * sds[comp]  # (n, R)
            out[rows] = means[comp] + torch.einsum("nr,nrh->nh", z, dirs[comp])
        return out.clamp(self.low, self.high)


class DreamAutoencoder(nn.Module):
    """An EP-trained image autoencoder: a 2-layer Hopfield energy ``image – code`` (hard-sigmoid units, biases on
    both layers), the generator of generative replay.

    * :meth:`codes` — image clamped, code layer relaxed (its only neighbour is the clamped image, so one
      fixed-point step reaches the equilibrium ``Π(xW + b)``);
    * :meth:`gradients` — the EP step of reconstruction: code layer clamped at those codes, image free and nudged
      toward the image (the same energy with the other layer clamped; the weights are shared as views);
    * :meth:`decode` — code clamped, image relaxed.

    Args:
        in_dim: Pixels per image.
        hidden: Code size.
        beta: EP nudging strength (symmetric ±β).
        nudged_steps: Relaxation steps of each nudged phase.
        seed: Initialisation seed.
    """

    def __init__(self, in_dim: int, hidden: int = 1000, beta: float = 0.5, nudged_steps: int = 4,
                 seed: int = 0) -> None:  # fmt: skip
        super().__init__()
        if in_dim < 1 or hidden < 1:
            raise ValueError(f"in_dim and hidden must be >= 1, got {in_dim} and {hidden}")
        self.in_dim, self.hidden = int(in_dim), int(hidden)
        self.net = EnergyNet(
            [self.in_dim, self.hidden],
            activation="hard_sigmoid",
            input_activation="hard_sigmoid",
            input_bias=True,
            generator=torch.Generator().manual_seed(seed),
        )
        # code → image; not a submodule: its parameters are views of self.net's
        self._dec = [_decoder(self.net)]
        self.cost = MSECost()
        self.ep = EPConfig(beta=beta, symmetric=True, free_steps=1, nudged_steps=nudged_steps)

    @torch.no_grad()
    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """Codes ``(B, hidden)`` of images ``(B, in_dim)``."""
        x = _check_images(x, self.in_dim)
        return settle(self.net, [x, torch.zeros(len(x), self.hidden)], clamped=(0,), steps=1).states[1]

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Images ``(B, in_dim)`` relaxed with the code layer clamped to ``codes``."""
        return _decode(self._dec[0], codes)

    def gradients(self, x: torch.Tensor) -> tuple[dict[nn.Parameter, torch.Tensor], float]:
        """EP gradients of reconstructing ``x`` from its codes, on this net's parameters; also the free cost."""
        x = _check_images(x, self.in_dim)
        return _recon_gradients(self.net, self._dec[0], self.cost, self.codes(x), x, self.ep)

    def train_batch(self, x: torch.Tensor, optimizer: torch.optim.Optimizer) -> float:
        """One EP reconstruction step on ``x`` ``(B, in_dim)``; returns the free-phase cost."""
        grads, loss = self.gradients(x)
        optimizer.zero_grad(set_to_none=True)
        for p, g in grads.items():
            p.grad = g
        optimizer.step()
        return loss


class DreamerNet(nn.Module):
    """A classifier that also dreams (see the module docstring).

    Args:
        in_dim: Pixels per image.
        num_classes: Labels.
        config: :class:`DreamerConfig`.
    """

    def __init__(self, in_dim: int, num_classes: int, config: DreamerConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or DreamerConfig()
        gen = torch.Generator().manual_seed(cfg.seed)
        self.in_dim, self.num_classes = int(in_dim), int(num_classes)
        self.net = EnergyNet(
            [self.in_dim, *cfg.hidden, self.num_classes * cfg.label_copies],
            activation="hard_sigmoid",
            input_activation="hard_sigmoid",
            input_bias=True,
            generator=gen,
        )
        self._rev = [_mirror(self.net)]  # not a submodule: its parameters are views of self.net's
        self._dec = [_decoder(self.net)]  # hidden → image, views as well
        self.cost = MSECost()
        self.ep = EPConfig(
            beta=cfg.beta, symmetric=True, free_steps=cfg.free_steps, nudged_steps=cfg.nudged_steps
        )
        self._gen = torch.Generator().manual_seed(cfg.seed + 1)

    def _onehot(self, labels: torch.Tensor) -> torch.Tensor:
        labels = torch.as_tensor(labels).long().reshape(-1)
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes})")
        y = nn.functional.one_hot(labels, self.num_classes).float()
        return y.repeat_interleave(self.config.label_copies, dim=-1)

    def _check_images(self, x: torch.Tensor) -> torch.Tensor:
        return _check_images(x, self.in_dim)

    def gradients(
        self, x: torch.Tensor, labels: torch.Tensor
    ) -> tuple[dict[nn.Parameter, torch.Tensor], dict]:
        """EP gradients of both directions, summed on the shared parameters; also the two free-phase costs."""
        x, y = self._check_images(x), self._onehot(labels)
        cls = ep_gradients(self.net, self.cost, x, y, self.ep)
        grads = dict(cls.grads)
        losses = {"classify": cls.loss}
        if self.config.dream_weight > 0:
            rev = self._rev[0]
            gen = ep_gradients(rev, self.cost, y, x, self.ep)
            owner = {id(p): (q, True) for p, q in zip(rev.weights, reversed(self.net.weights))}
            owner.update({id(p): (q, False) for p, q in zip(rev.biases, reversed(self.net.biases))})
            for p, g in gen.grads.items():
                q, is_weight = owner[id(p)]
                g = g.transpose(-1, -2) if is_weight else g
                grads[q] = grads.get(q, 0) + self.config.dream_weight * g
            losses["dream"] = gen.loss
        if self.config.recon_weight > 0:
            rec, losses["recon"] = _recon_gradients(
                self.net, self._dec[0], self.cost, cls.free.states[1], x, self.ep
            )
            for p, g in rec.items():
                grads[p] = grads.get(p, 0) + self.config.recon_weight * g
        return grads, losses

    def train_batch(self, x: torch.Tensor, labels: torch.Tensor, optimizer: torch.optim.Optimizer,
                    lr_scale: float = 1.0) -> dict:  # fmt: skip
        """One EP step in both directions; ``lr_scale`` multiplies the step (the surprise gate)."""
        grads, losses = self.gradients(x, labels)
        optimizer.zero_grad(set_to_none=True)
        for p, g in grads.items():
            if p.requires_grad:
                p.grad = g * lr_scale
        optimizer.step()
        return losses

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores at the free equilibrium (image clamped): label-layer states, ``(B, num_classes)``."""
        out = free_phase(self.net, self._check_images(x), self.ep).states[-1]
        return out.reshape(len(out), self.num_classes, self.config.label_copies).mean(-1)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        x = self._check_images(x)
        return torch.cat(
            [self.logits(x[i : i + batch_size]).argmax(-1) for i in range(0, len(x), batch_size)]
        )

    @torch.no_grad()
    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """First-hidden-layer states at the perception equilibrium (image clamped), ``(B, hidden)``."""
        return free_phase(self.net, self._check_images(x), self.ep).states[1]

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Images ``(B, in_dim)`` dreamt from hidden codes: first hidden layer clamped to ``codes``, image relaxed
        (one fixed-point step: the image's only neighbour is the clamped layer); the pathway is trained by
        ``recon_weight``."""
        return _decode(self._dec[0], codes)

    @torch.no_grad()
    def dream(
        self,
        labels,
        steps: int | None = None,
        noise: float = 0.0,
        generator: torch.Generator | None = None,
        return_states: bool = False,
    ):
        """Images ``(B, in_dim)`` dreamt for ``labels``: label clamped, image and hidden free, relaxed.

        The relaxation starts, as in training, from the top-down sweep of the label (plus Gaussian ``noise`` on the
        hidden and image states, drawn from ``generator`` or the net's own: different starts, different dreams).
        With ``return_states`` every layer's equilibrium is returned too (image first).
        """
        y = self._onehot(labels)
        g = generator if generator is not None else self._gen
        states = self._rev[0].feedforward(y)[::-1]  # image, hidden..., label
        if noise > 0:
            states = [s + noise * torch.randn(s.shape, generator=g) for s in states[:-1]] + [y]
        states[-1] = y
        res = settle(self.net, states, clamped=(-1,), steps=steps or self.config.dream_steps)
        return (res.states[0], res.states) if return_states else res.states[0]


class GenerativeEPClassifier(nn.Module):
    """One EP autoencoder per class; an image's class is the one whose autoencoder reconstructs it best.

    The score of class ``c`` is the reconstruction energy ``½‖x − decode_c(codes_c(x))‖²`` of its
    :class:`DreamAutoencoder` (code layer relaxed with the image clamped, then the image relaxed with the code
    clamped: the net's two equilibria). Each net learns only from images of its class (:meth:`train_class`), so
    classes can arrive one after another without forgetting. A small code (``hidden``) keeps each net specific to
    its class: a net that reconstructs every digit well no longer tells them apart.

    Args:
        in_dim: Pixels per image.
        num_classes: Number of classes (one autoencoder each).
        hidden: Code size of each autoencoder.
        beta: EP nudging strength of the reconstruction step.
        seed: Initialisation seed (class ``c`` uses ``seed + c``).
    """

    def __init__(
        self, in_dim: int, num_classes: int, hidden: int = 100, beta: float = 0.5, seed: int = 0
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.in_dim, self.num_classes = int(in_dim), int(num_classes)
        self.nets = nn.ModuleList(
            DreamAutoencoder(in_dim, hidden, beta=beta, seed=seed + c) for c in range(num_classes)
        )

    @torch.no_grad()
    def energies(self, x: torch.Tensor, classes: list[int] | None = None) -> torch.Tensor:
        """Reconstruction energies ``(B, K)`` of images ``(B, in_dim)`` under each class's net (``classes``: a
        subset, in that order; default all)."""
        x = _check_images(x, self.in_dim)
        cls = range(self.num_classes) if classes is None else classes
        out = []
        for c in cls:
            net = self.nets[c]
            out.append(0.5 * ((net.decode(net.codes(x)) - x) ** 2).sum(1))
        return torch.stack(out, 1)

    @torch.no_grad()
    def predict(
        self, x: torch.Tensor, classes: list[int] | None = None, batch_size: int = 1000
    ) -> torch.Tensor:
        """Labels ``(B,)``: the class of lowest energy among ``classes`` (default all)."""
        x = _check_images(x, self.in_dim)
        cls = torch.tensor(list(range(self.num_classes)) if classes is None else list(classes))
        if len(cls) == 0:
            raise ValueError("classes is empty: nothing to choose from")
        return torch.cat([cls[self.energies(b, cls.tolist()).argmin(1)] for b in x.split(batch_size)])

    def train_class(
        self, c: int, x: torch.Tensor, optimizer: torch.optim.Optimizer, lr_scale: float = 1.0
    ) -> float:
        """One EP reconstruction step of class ``c``'s net on its images ``x``; ``optimizer`` must hold that
        net's parameters (see :meth:`class_parameters`); its learning rate is scaled by ``lr_scale`` for this
        step. Returns the free-phase cost."""
        if not 0 <= c < self.num_classes:
            raise ValueError(f"class {c} outside [0, {self.num_classes})")
        if not (math.isfinite(lr_scale) and lr_scale >= 0):
            raise ValueError(f"lr_scale must be finite and >= 0, got {lr_scale}")
        grads, loss = self.nets[c].gradients(x)
        optimizer.zero_grad(set_to_none=True)
        for p, g in grads.items():
            p.grad = g
        rates = [group["lr"] for group in optimizer.param_groups]
        for group in optimizer.param_groups:
            group["lr"] = group["lr"] * lr_scale
        try:
            optimizer.step()
        finally:
            for group, lr in zip(optimizer.param_groups, rates, strict=True):
                group["lr"] = lr
        return loss

    def class_parameters(self, c: int) -> list[nn.Parameter]:
        """The trainable parameters of class ``c``'s net."""
        return list(self.nets[c].net.trainable_parameters())
