"""Online statistics and memory of the world model: running normalisers and a bounded replay ring buffer."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = ["ReplayBuffer", "RunningNormalizer"]


class RunningNormalizer(nn.Module):
    """Online mean/std (Welford over all data seen), saved as buffers.

    Args:
        dim: Feature dimension.
        min_std: Floor of the standard deviation.
    """

    def __init__(self, dim: int, min_std: float = 1e-3) -> None:
        super().__init__()
        self.min_std = float(min_std)
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("m2", torch.zeros(dim, dtype=torch.float64))

    def update(self, x: torch.Tensor) -> None:
        if self.mean.device.type == "cpu":  # the same float64 arithmetic in numpy, on the buffers' memory
            xs = x.detach().cpu().numpy().astype(np.float64).reshape(-1, self.mean.shape[0])
            n = xs.shape[0]
            if n == 0:
                return
            count, mean, m2 = float(self.count), self.mean.numpy(), self.m2.numpy()
            bmean = xs.mean(0)
            bm2 = ((xs - bmean) ** 2).sum(0)
            tot = count + n
            delta = bmean - mean
            mean += delta * n / tot
            m2 += bm2 + delta**2 * count * n / tot
            self.count.fill_(tot)
            self.__dict__["_stamp"] = (
                self.__dict__.get("_stamp", 0) + 1
            )  # numpy writes bump no tensor version
            return
        x = x.detach().to(torch.float64).reshape(-1, self.mean.shape[0])
        n = x.shape[0]
        if n == 0:
            return
        bmean = x.mean(0)
        bm2 = ((x - bmean) ** 2).sum(0)
        tot = self.count + n
        delta = bmean - self.mean
        self.mean += delta * n / tot
        self.m2 += bm2 + delta**2 * self.count * n / tot
        self.count.fill_(float(tot))

    @property
    def version(self) -> tuple:
        """Changes whenever the statistics do (an update, a loaded state, an in-place write through torch): the key
        of values cached from them."""
        stamp = self.__dict__.get("_stamp", 0)
        return (stamp, self.count._version, self.mean._version, self.m2._version, self.mean.data_ptr())

    @property
    def std(self) -> torch.Tensor:
        var = self.m2 / self.count.clamp_min(1.0)
        return var.sqrt().clamp_min(self.min_std)

    def moments(self, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, std)`` cast to ``dtype``, cached until the statistics change (their tensor versions are the
        key: an update or a loaded state bumps them), so the many normalisations per env step cost one op each."""
        key = (self.version, dtype)
        cache = self.__dict__.get("_moments")
        if cache is None or cache[0] != key:
            cache = (key, self.mean.to(dtype), self.std.to(dtype))
            self.__dict__["_moments"] = cache
        return cache[1], cache[2]

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self.moments(x.dtype)
        return (x - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self.moments(x.dtype)
        return x * std + mean


class ReplayBuffer:
    """A bounded FIFO of transitions (numpy ring buffer): memory is fixed at construction."""

    def __init__(self, capacity: int, obs_dim: int, act_dim: int) -> None:
        if capacity < 1:
            raise ValueError(f"replay capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.obs = np.zeros((capacity, obs_dim), np.float32)
        self.act = np.zeros((capacity, act_dim), np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), np.float32)
        self.reward = np.zeros(capacity, np.float32)
        self.term = np.zeros(capacity, np.float32)
        self.size = 0
        self.pos = 0

    def add(self, obs, act, next_obs, reward, term) -> None:
        """Appends one transition, or a batch of ``E`` (leading dimension ``E`` on every argument)."""
        obs = np.asarray(obs, np.float32).reshape(-1, self.obs.shape[1])
        e = obs.shape[0]
        if e > self.capacity:
            raise ValueError(f"cannot add {e} transitions to a replay of capacity {self.capacity}")
        idx = (self.pos + np.arange(e)) % self.capacity
        self.obs[idx] = obs
        self.act[idx] = np.asarray(act, np.float32).reshape(e, -1)
        self.next_obs[idx] = np.asarray(next_obs, np.float32).reshape(e, -1)
        self.reward[idx] = np.asarray(reward, np.float32).reshape(e)
        self.term[idx] = np.asarray(term, np.float32).reshape(e)
        self.pos = int((self.pos + e) % self.capacity)
        self.size = min(self.size + e, self.capacity)

    def newest(self, n: int) -> np.ndarray:
        """Indices of the ``n`` newest transitions, oldest first."""
        return (self.pos - n + np.arange(n)) % self.capacity

    def sample(self, idx: np.ndarray) -> tuple[np.ndarray, ...]:
        return self.obs[idx], self.act[idx], self.next_obs[idx], self.reward[idx], self.term[idx]

    def keep_last(self, n: int) -> None:
        """Forgets all but the ``n`` newest transitions (kept in order at the start of the buffer)."""
        n = max(0, min(int(n), self.size))
        idx = (self.pos - n + np.arange(n)) % self.capacity
        for arr in (self.obs, self.act, self.next_obs, self.reward, self.term):
            arr[:n] = arr[idx].copy()
        self.size, self.pos = n, n % self.capacity
