"""eqagent: reinforcement-learning agents whose brain learns by Equilibrium Propagation.

The core (this package) depends on torch and numpy only. Gymnasium envs live in :mod:`eqagent.envs` and agents in
:mod:`eqagent.agents`; the core never imports them.
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
