"""eqagent: reinforcement-learning agents whose brain learns by Equilibrium Propagation.

The library (this package, less its ``apps``, ``agents`` and ``envs`` subpackages) depends on torch, numpy and
Gymnasium's spaces. The applications (the command, the MNIST runs, the benchmarks), the agent and the registered
envs live in those three subpackages, built from the repository's ``apps/``, ``agents/`` and ``envs/`` folders;
the library never imports them.
"""

from eqagent.costs import CrossEntropyCost, MSECost
from eqagent.energy import EnergyNet
from eqagent.ep import EPConfig, ep_gradients, free_phase, gradient_check, nudged_phase, write_grads
from eqagent.relax import RelaxationDiverged, RelaxResult, settle

__version__ = "0.1.0"

__all__ = [
    "CrossEntropyCost",
    "EPConfig",
    "EnergyNet",
    "MSECost",
    "RelaxResult",
    "RelaxationDiverged",
    "__version__",
    "ep_gradients",
    "free_phase",
    "gradient_check",
    "nudged_phase",
    "settle",
    "write_grads",
]
