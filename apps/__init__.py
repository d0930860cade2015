"""Applications of eqagent (installed as ``eqagent.apps``): the ``eqagent`` command, the MNIST warm-up runs
(classifier, dreaming, relaxation viewer), the gradient check run and the benchmarks.

The library (:mod:`eqagent`) never imports this package; the RL applications live in :mod:`eqagent.agents`.
"""
