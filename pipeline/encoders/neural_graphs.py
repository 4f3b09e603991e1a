"""Neural-Graphs-style encoder (Kofinas et al., "Graph Neural Networks for Learning Equivariant
Representations of Neural Networks", ICLR 2024): message passing on the computational graph with
permutation symmetry only."""
from __future__ import annotations

from pipeline.constants import EMBEDDING_DIM
from pipeline.encoders.computational import ComputationalGraphEncoder


class NeuralGraphs(ComputationalGraphEncoder):
    """Edge-conditioned messages on ``w, |w|, w^2`` and plain updates (see
    :class:`~pipeline.encoders.computational.ComputationalGraphEncoder` with ``scale_aware=False``):
    invariant to hidden-neuron permutations (coupled across layers, heads and streams as annotated);
    not invariant to scalings or sign flips, nor to an uncoupled permutation.

    Args:
        dim: embedding width.
        hidden: node state width.
        layers: sweeps of message passing over the network.
        probes: read the network's outputs at the probe inputs.
        statistics: read the weight statistics.

    Shapes: ``graphs`` (list of ``B`` :class:`GraphInput`) -> ``[B, dim]``.
    """

    def __init__(self, dim: int = EMBEDDING_DIM, hidden: int = 128, layers: int = 4, probes: bool = True,
                 statistics: bool = True):
        super().__init__(dim, hidden, layers, scale_aware=False, bases=("w", "abs", "sq"), probes=probes,
                         statistics=statistics)
