"""ScaleGMN-style encoder (Kalogeropoulos et al., "Scale Equivariant Graph Metanetworks", NeurIPS
2024; the invariant encoder of ``shared/seeds/003``): invariant to hidden-neuron permutations *and*
to each activation's scaling group (positive per-neuron scaling for ReLU-family units, sign flips
for tanh/sine units)."""
from __future__ import annotations

from pipeline.constants import EMBEDDING_DIM
from pipeline.encoders.computational import ComputationalGraphEncoder


class ScaleGMN(ComputationalGraphEncoder):
    """Node states carry each node's factor ``q`` (messages are linear in the weights, updates use
    gated nonlinearities with no additive terms); the readout canonicalizes (``x/||x||`` for
    positive scaling, ``|x|`` for signs) before pooling. Exactly invariant to the groups the graph
    annotates; not invariant to an uncoupled permutation (it sees the wiring). See
    :class:`~pipeline.encoders.computational.ComputationalGraphEncoder` with ``scale_aware=True``.

    Args:
        dim: embedding width.
        hidden: node state width.
        layers: sweeps of message passing over the network.
        probes: read the network's outputs at the probe inputs (``False``: the ablation
            ``scale_gmn_no_probes``).
        statistics: read the weight statistics.

    Shapes: ``graphs`` (list of ``B`` :class:`GraphInput`) -> ``[B, dim]``.
    """

    def __init__(self, dim: int = EMBEDDING_DIM, hidden: int = 128, layers: int = 4, probes: bool = True,
                 statistics: bool = True):
        super().__init__(dim, hidden, layers, scale_aware=True, bases=("w",), probes=probes,
                         statistics=statistics)
