"""The weight decoder: a latent vector to the flat weights of one target architecture.

As in the second seed's autoencoder (ScaleGMN encoder, MLP decoder): a plain MLP, hidden widths
``2 d`` and ``4 d`` with SiLU, and a linear output of the ``P`` parameters. Its input is an
invariant embedding, so what it writes is one network per orbit: the canonical representative.

Shapes: ``z [B, d] -> [B, P]``.
"""
from __future__ import annotations

from torch import nn


class WeightDecoder(nn.Sequential):
    """Args: ``latent`` (``d``), ``num_params`` (``P``)."""

    def __init__(self, latent: int, num_params: int):
        super().__init__(nn.Linear(latent, 2 * latent), nn.SiLU(), nn.Linear(2 * latent, 4 * latent), nn.SiLU(),
                         nn.Linear(4 * latent, num_params))
