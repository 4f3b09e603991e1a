"""ScaleGMN-style encoder: invariant to hidden-neuron permutations *and* to each activation's scaling
group (positive per-neuron scaling for ReLU-family units, sign flips for tanh/sine units)."""
from __future__ import annotations

from pipeline.encoders.computational import ComputationalGraphEncoder


class ScaleGMN(ComputationalGraphEncoder):
    """Node states carry each node's factor ``q`` (messages are linear in the weights, updates use
    gated nonlinearities with no additive terms); the readout canonicalizes (``x/||x||`` for
    positive scaling, ``|x|`` for signs) before pooling. Exactly invariant to the groups the graph
    annotates; not invariant to an uncoupled permutation (it sees the wiring).

    ``graphs`` -> ``[batch, dim]``.
    """

    def __init__(self, dim: int = 256, hidden: int = 128, layers: int = 4, probes: bool = True,
                 statistics: bool = True):
        super().__init__(dim, hidden, layers, scale_aware=True, bases=("w",), probes=probes,
                         statistics=statistics)
