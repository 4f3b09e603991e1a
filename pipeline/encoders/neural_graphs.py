"""Neural-Graphs-style encoder: message passing on the computational graph with permutation
symmetry only (the ablation of the second seed)."""
from __future__ import annotations

from pipeline.encoders.computational import ComputationalGraphEncoder


class NeuralGraphs(ComputationalGraphEncoder):
    """Edge-conditioned messages on ``w, |w|, w^2`` and plain updates: invariant to hidden-neuron
    permutations (coupled across layers, heads and streams as annotated); not invariant to scalings
    or sign flips, nor to an uncoupled permutation.

    ``graphs`` -> ``[batch, dim]``.
    """

    def __init__(self, dim: int = 256, hidden: int = 128, layers: int = 4, probes: bool = True,
                 statistics: bool = True):
        super().__init__(dim, hidden, layers, scale_aware=False, bases=("w", "abs", "sq"), probes=probes,
                         statistics=statistics)
