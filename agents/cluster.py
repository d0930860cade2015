"""Ray, embedded on this machine or joined to a cluster: the one place ``eqagent`` starts it.

Ray is an optional extra (``pip install 'eqagent[ray]'``); without it, :func:`init_ray` raises
:class:`MissingExtra` (the CLI prints it as one line and exits 2) and everything else in the package works.

* ``address=""`` (the default): embedded Ray on this machine, ``num_cpus`` CPUs (0: all cores). Trials and
  tasks ask for one CPU each and run with one torch thread.
* ``address="auto"``: the cluster this machine is a node of (``ray start --head`` on one machine,
  ``ray start --address HEAD:6379`` on the others). ``address="HOST:PORT"``: that cluster's head.

On a cluster every node needs ``eqagent`` installed in the same Python (``pip install 'eqagent[ray]'``, or the
repo checked out at the same path and ``bash scripts/setup.sh``), and a sweep's output folder must be on a shared
filesystem every node can reach (e.g. NFS), as Ray Tune requires for multi-node experiments.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["MissingExtra", "init_ray", "require_ray", "run_tasks"]


class MissingExtra(ImportError):
    """An optional dependency is not installed (the message says which ``pip install`` adds it)."""


def require_ray() -> Any:
    """The ``ray`` module, or :class:`MissingExtra` naming the extra to install."""
    try:
        import ray
        import ray.tune  # the sweep needs Tune (ray[tune])
    except ImportError as e:
        raise MissingExtra(
            f"this needs Ray Tune ({e}); install it with: pip install 'eqagent[ray]'"
        ) from None
    return ray


def init_ray(address: str = "", num_cpus: int = 0, quiet: bool = True) -> Any:
    """Starts (or joins) Ray once per process and returns the ``ray`` module.

    Args:
        address: ``""`` for embedded Ray on this machine, ``"auto"`` or ``"HOST:PORT"`` to join a cluster.
        num_cpus: CPUs of the embedded instance (0: ``os.cpu_count()``); ignored when joining a cluster.
        quiet: Keep workers' stdout/stderr out of the driver's terminal (they stay in Ray's session logs).
    """
    if num_cpus < 0:
        raise ValueError(f"num_cpus must be >= 0, got {num_cpus}")
    ray = require_ray()
    if ray.is_initialized():
        return ray
    # one thread per trial/task: Ray sets OMP_NUM_THREADS for its workers; torch reads it at import
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    runtime_env = {"env_vars": env}
    if address:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=not quiet)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False, runtime_env=runtime_env,
                 log_to_driver=not quiet)  # fmt: skip
    return ray


def run_tasks(fn: Any, calls: list[tuple], address: str = "", num_cpus: int = 0) -> list:
    """``[fn(*args) for args in calls]`` as Ray tasks of one CPU each (results in call order)."""
    ray = init_ray(address, num_cpus)
    task = ray.remote(num_cpus=1)(fn)
    return list(ray.get([task.remote(*args) for args in calls]))
