"""The canonicalization autoencoder: an invariant encoder from the registry and a weight decoder."""
from __future__ import annotations

import torch
from torch import nn

from pipeline.autoencoder.decoder import WeightDecoder
from pipeline.autoencoder.functional import probe_inputs
from pipeline.autoencoder.target import TargetArchitecture
from pipeline.constants import NUM_PROBES
from pipeline.encoders import build_encoder, prepare, probe_inputs_of
from pipeline.encoders.executor import FUNCTION_ACTIVATIONS
from pipeline.encoders.graph_input import GraphInput
from pipeline.graph.schema import WeightGraph


class Autoencoder(nn.Module):
    """``graphs`` (:meth:`prepare`\\ d, of the target architecture) -> ``(latent [B, d], weights [B, P])``.

    ``encoder``: a registry name; ``scale_gmn`` (the seed's: invariant to permutations and to the
    scalings or sign flips of its activation) makes every element of a model's orbit decode to the
    same weights, ``neural_graphs`` (permutations only) is the ablation. An encoder that reads probes
    reads the network's outputs at ``NUM_PROBES`` of the target's *training* inputs (pixel coordinates
    of an INR, samples of a classifier's training split), sine networks included: the target fixes
    their frequency. ``weight_stats``: per tensor ``(mean, std)`` over the training networks
    (:meth:`TargetArchitecture.statistics`; default ``(0, 1)``), which the decoder writes
    standardized weights against."""

    def __init__(self, target: TargetArchitecture, encoder: str = "scale_gmn", latent: int = 128,
                 weight_stats: list | None = None, encoder_kwargs: dict | None = None):
        super().__init__()
        self.target = target
        self.encoder = build_encoder(encoder, dim=latent, hidden=latent, **(encoder_kwargs or {}))
        probes = probe_inputs_of(self.encoder)
        if probes is not None:
            train = probe_inputs(target)[0]
            chosen = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:NUM_PROBES]
            probes.set({"target": train[chosen.sort().values]})
        mean, std = zip(*(weight_stats or [(0.0, 1.0)] * len(target.shapes)))
        self.decoder = WeightDecoder(latent, target.per_parameter(mean), target.per_parameter(std))

    def prepare(self, graph: WeightGraph) -> GraphInput:
        """The encoder's input for ``graph`` (on the CPU, float32)."""
        return prepare(graph, probes=probe_inputs_of(self.encoder), activations=FUNCTION_ACTIVATIONS)

    def forward(self, graphs: list[GraphInput]) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encoder(graphs)
        return z, self.decoder(z)
