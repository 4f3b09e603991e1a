"""The canonicalization autoencoder: an invariant encoder from the registry and a weight decoder."""
from __future__ import annotations

import torch
from torch import nn

from pipeline.autoencoder.decoder import WeightDecoder
from pipeline.autoencoder.target import TargetArchitecture
from pipeline.encoders import build_encoder


class Autoencoder(nn.Module):
    """``graphs`` (prepared, of the target architecture) -> ``(latent [B, d], weights [B, P])``.

    ``encoder``: a registry name; ``scale_gmn`` (the seed's: invariant to permutations and to the
    scalings or sign flips of its activation) makes every element of a model's orbit decode to the
    same weights, ``neural_graphs`` (permutations only) is the ablation."""

    def __init__(self, target: TargetArchitecture, encoder: str = "scale_gmn", latent: int = 128,
                 encoder_kwargs: dict | None = None):
        super().__init__()
        self.target = target
        self.encoder = build_encoder(encoder, dim=latent, hidden=latent, **(encoder_kwargs or {}))
        self.decoder = WeightDecoder(latent, target.num_params)

    def forward(self, graphs) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encoder(graphs)
        return z, self.decoder(z)
