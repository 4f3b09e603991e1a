"""The weight decoder: a latent vector to the flat weights of one target architecture.

As in the second seed's autoencoder (ScaleGMN encoder, MLP decoder): a plain MLP, hidden widths
``2 d`` and ``4 d`` with SiLU, and a linear output of the ``P`` parameters. Its input is an
invariant embedding, so what it writes is one network per orbit: the canonical representative.

The MLP writes *standardized* weights: its output is multiplied by each tensor's standard deviation
over the training networks and added to the tensor's mean (``shift`` and ``scale``, fixed buffers).
Tensors of one network differ in scale by orders of magnitude (a SIREN's hidden weights are about
0.02, its first layer's about 0.3); written raw, the small ones start far too large and the decoded
networks' outputs diverge.

Shapes: ``z [B, d] -> [B, P]``.
"""
from __future__ import annotations

import torch
from torch import nn


class WeightDecoder(nn.Module):
    """Args: ``latent`` (``d``), ``shift`` and ``scale`` (``[P]``: each parameter's tensor mean and
    standard deviation over the training networks)."""

    def __init__(self, latent: int, shift: torch.Tensor, scale: torch.Tensor):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(latent, 2 * latent), nn.SiLU(), nn.Linear(2 * latent, 4 * latent), nn.SiLU(),
                                 nn.Linear(4 * latent, len(shift)))
        self.register_buffer("shift", shift.float())
        self.register_buffer("scale", scale.float())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.shift + self.scale * self.mlp(z)
