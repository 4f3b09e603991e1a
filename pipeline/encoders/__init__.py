"""Weight encoders: graphs in, ``[batch, dim]`` embeddings out, chosen by name.

A :class:`~pipeline.graph.schema.WeightGraph` is prepared (:mod:`.prepare`) into a
:class:`GraphInput` (:mod:`.graph_input`): its blocks as tensors, its outputs at the probe inputs
(:mod:`.probes`, run by :mod:`.executor`; summarized by :mod:`.output_profile`) and its weight
statistics (:mod:`.statistics`). Message-passing layers live in :mod:`.conv`; a trained encoder's
state file in :mod:`.state`.

=======================  ============================================================  =============
name                     invariant to                                                  graph
=======================  ============================================================  =============
``scale_gmn``            hidden permutations (coupled), positive scaling, sign flips   computational
``scale_gmn_no_probes``  the same; without functional probe features (ablation)        computational
``neural_graphs``        hidden permutations (coupled)                                 computational
``equivariant_gnn``      per-tensor row and column permutations (also uncoupled ones)  any
``pca``                  nothing                                                       any
``weight_transformer``   nothing                                                       any
=======================  ============================================================  =============
"""
from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from pipeline.encoders.baselines import PCAEncoder, WeightTransformer
from pipeline.encoders.equivariant_gnn import EquivariantGNN
from pipeline.encoders.graph_input import GraphInput
from pipeline.encoders.neural_graphs import NeuralGraphs
from pipeline.encoders.prepare import prepare, prepare_many
from pipeline.encoders.probes import probe_inputs_of
from pipeline.encoders.scale_gmn import ScaleGMN
from pipeline.graph.schema import WeightGraph

ENCODERS: dict[str, Callable[..., nn.Module]] = {
    "scale_gmn": ScaleGMN,
    "scale_gmn_no_probes": partial(ScaleGMN, probes=False),
    "neural_graphs": NeuralGraphs,
    "equivariant_gnn": EquivariantGNN,
    "pca": PCAEncoder,
    "weight_transformer": WeightTransformer,
}
#: Encoders that read the network's wiring: they must not be invariant to uncoupled permutations.
WIRING_AWARE = ("scale_gmn", "scale_gmn_no_probes", "neural_graphs")


def build_encoder(name: str, **kwargs) -> nn.Module:
    if name not in ENCODERS:
        raise KeyError(f"unknown encoder {name!r}; choose from {sorted(ENCODERS)}")
    return ENCODERS[name](**kwargs)


@torch.no_grad()
def embed(encoder: nn.Module, graphs: list[WeightGraph | GraphInput], batch_size: int = 64) -> torch.Tensor:
    """Embeddings ``[len(graphs), dim]`` (on the CPU) of graphs prepared on the fly (with the
    encoder's probe inputs), in batches, on the encoder's device and dtype; eval mode."""
    encoder.eval()
    reference = next(iter(encoder.parameters()), next(iter(encoder.buffers()), None))
    probes = probe_inputs_of(encoder)
    raw = [i for i, g in enumerate(graphs) if not isinstance(g, GraphInput)]
    inputs = list(graphs)
    for i, prepared in zip(raw, prepare_many([graphs[i] for i in raw], reference.dtype, probes=probes)):
        inputs[i] = prepared
    inputs = [g.to(reference.device) for g in inputs]
    return torch.cat([encoder(inputs[i:i + batch_size]).cpu() for i in range(0, len(inputs), batch_size)])


__all__ = ["ENCODERS", "WIRING_AWARE", "EquivariantGNN", "GraphInput", "NeuralGraphs", "PCAEncoder", "ScaleGMN",
           "WeightTransformer", "build_encoder", "embed", "prepare", "prepare_many", "probe_inputs_of"]
