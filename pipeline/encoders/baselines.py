"""Baselines with no symmetry constraints, as in "Permutation-Equivariant Contrastive Embeddings for
Model Zoo Retrieval" (``shared/seeds/000``): PCA and a Transformer over flattened weights. Both read
the weights as one vector (edge weights then biases, in graph order)."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pipeline.constants import EMBEDDING_DIM
from pipeline.encoders.graph_input import GraphInput


def flat_weights(graph: GraphInput, length: int | None = None) -> torch.Tensor:
    """The model's edge weights then biases as one vector, cut or zero-padded to ``length``."""
    parts = [b.weight.reshape(-1) for b in graph.blocks if b.weight is not None]
    parts += [g.bias for g in graph.groups if g.bias is not None]
    dtype = max((p.dtype for p in parts), key=lambda d: torch.finfo(d).bits)  # 16-bit weights beside biases
    flat = torch.cat([p.to(dtype) for p in parts])
    if length is None:
        return flat
    return torch.nn.functional.pad(flat[:length], (0, max(0, length - len(flat))))


class PCAEncoder(nn.Module):
    """Projection of the flattened weights (first ``length`` values) on principal components fitted
    with :meth:`fit`. ``graphs`` -> ``[batch, dim]``."""

    def __init__(self, dim: int = EMBEDDING_DIM, length: int = 4096):
        super().__init__()
        self.length = length
        self.register_buffer("mean", torch.zeros(length))
        self.register_buffer("components", torch.zeros(dim, length))

    def fit(self, graphs: list[GraphInput]) -> "PCAEncoder":
        from sklearn.decomposition import PCA

        x = torch.stack([flat_weights(g, self.length) for g in graphs]).double().numpy()
        dim = min(self.components.shape[0], *x.shape)
        pca = PCA(dim, random_state=0).fit(x)
        self.mean.copy_(torch.from_numpy(pca.mean_))
        self.components.zero_()
        self.components[:dim] = torch.from_numpy(pca.components_)
        return self

    def forward(self, graphs: list[GraphInput]) -> torch.Tensor:
        x = torch.stack([flat_weights(g, self.length) for g in graphs]).to(self.mean)
        return (x - self.mean) @ self.components.T


class WeightTransformer(nn.Module):
    """Transformer over tokens of ``token`` consecutive flattened weights (at most ``max_tokens``,
    evenly spaced when there are more), mean-pooled. ``graphs`` -> ``[batch, dim]``."""

    def __init__(self, dim: int = EMBEDDING_DIM, hidden: int = 128, layers: int = 2, heads: int = 4, token: int = 64,
                 max_tokens: int = 256):
        super().__init__()
        self.token, self.max_tokens = token, max_tokens
        self.embed = nn.Linear(token, hidden)
        self.position = nn.Parameter(torch.randn(max_tokens, hidden) * 0.02)
        layer = nn.TransformerEncoderLayer(hidden, heads, 2 * hidden, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Linear(hidden, dim)

    def tokens(self, graph: GraphInput) -> torch.Tensor:
        flat = flat_weights(graph)
        flat = torch.nn.functional.pad(flat, (0, (-len(flat)) % self.token)).reshape(-1, self.token)
        if len(flat) > self.max_tokens:
            flat = flat[np.linspace(0, len(flat) - 1, self.max_tokens).round().astype(int)]
        return flat

    def forward(self, graphs: list[GraphInput]) -> torch.Tensor:
        tokens = [self.tokens(g) for g in graphs]
        n = max(len(t) for t in tokens)
        batch = torch.stack([torch.nn.functional.pad(t, (0, 0, 0, n - len(t))) for t in tokens]).to(self.position)
        mask = torch.stack([torch.arange(n, device=batch.device) >= len(t) for t in tokens])
        h = self.encoder(self.embed(batch) + self.position[:n], src_key_padding_mask=mask)
        keep = (~mask).unsqueeze(-1).to(h.dtype)
        return self.out((h * keep).sum(1) / keep.sum(1))
