"""Energy families of the engine, one module each, on a common contract (:class:`LayeredEnergy`).

* :mod:`eqagent.energy.hopfield` — the layered Hopfield energy :class:`EnergyNet` (Scellier & Bengio 2017): the
  free phase is a true relaxation (fixed-point or gradient dynamics).
* :mod:`eqagent.energy.prediction_error` — the layer-wise prediction-error energy (:class:`SequentialEnergy` for an
  ``nn.Sequential`` in :mod:`eqagent.energy.sequential`, :class:`EnsembleMLPEnergy` for the world model and the value): its free equilibrium is the
  feed-forward pass (:func:`propagate`), so only the nudged phases relax.
* :mod:`eqagent.energy.activations` — the activations ρ and their boxes.

Both families relax through the one path :func:`eqagent.relax.settle` and learn through :mod:`eqagent.ep`.
"""

from eqagent.energy.activations import ACTIVATIONS, Activation, get_activation
from eqagent.energy.base import Dynamics, LayeredEnergy
from eqagent.energy.hopfield import EnergyNet
from eqagent.energy.prediction_error import EnsembleMLPEnergy, PredictionErrorEnergy, propagate
from eqagent.energy.sequential import SequentialEnergy

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "Dynamics",
    "EnergyNet",
    "EnsembleMLPEnergy",
    "LayeredEnergy",
    "PredictionErrorEnergy",
    "SequentialEnergy",
    "get_activation",
    "propagate",
]
