"""The model families of the zoo, as torch modules whose parameter names the graph builders know.

=============  ==============================================  =========================
family         parameters                                      graph builder
=============  ==============================================  =========================
``mlp``        ``layers.{i}.weight/bias``                      sequential
``resnet``     ``stem``, ``blocks.{i}.fc1/fc2``, ``head``      residual (identity skips)
``cnn``        ``convs.{i}`` (3x3, 16 ch), ``head`` after GAP  sequential (Small CNN Zoo)
``inr``        ``layers.{i}``, sine activations (SIREN)        sequential
``transformer`` Hugging Face BERT names                        transformer
=============  ==============================================  =========================
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

ACTIVATIONS = {"relu": F.relu, "tanh": torch.tanh, "gelu": F.gelu, "sine": torch.sin}


class MLP(nn.Module):
    """``x [B, in] -> [B, out]``: linear layers with an activation between them."""

    def __init__(self, in_dim: int, widths: list[int], out_dim: int, activation: str = "relu",
                 dropout: float = 0.0):
        super().__init__()
        dims = [in_dim, *widths, out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.act, self.dropout = ACTIVATIONS[activation], dropout

    def forward(self, x):
        x = x.flatten(1)
        for layer in self.layers[:-1]:
            x = F.dropout(self.act(layer(x)), self.dropout, self.training)
        return self.layers[-1](x)


class ResidualBlock(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)


class ResMLP(nn.Module):
    """``x [B, in] -> [B, out]``: ``h = act(stem(x))``, ``h = h + fc2(act(fc1(h)))`` per block, ``head(h)``."""

    def __init__(self, in_dim: int, dim: int, hidden: int, num_blocks: int, out_dim: int,
                 activation: str = "relu", dropout: float = 0.0):
        super().__init__()
        self.stem = nn.Linear(in_dim, dim)
        self.blocks = nn.ModuleList(ResidualBlock(dim, hidden) for _ in range(num_blocks))
        self.head = nn.Linear(dim, out_dim)
        self.act, self.dropout = ACTIVATIONS[activation], dropout

    def forward(self, x):
        h = self.act(self.stem(x.flatten(1)))
        for block in self.blocks:
            h = h + F.dropout(block.fc2(self.act(block.fc1(h))), self.dropout, self.training)
        return self.head(h)


class SmallCNN(nn.Module):
    """``x [B, 1, H, W] -> [B, out]``: Small-CNN-Zoo style, 3x3 convs, global average pooling, dense head
    (4,970 parameters with 16 channels and 10 classes)."""

    def __init__(self, in_channels: int = 1, channels: int = 16, num_convs: int = 3, out_dim: int = 10,
                 activation: str = "relu", dropout: float = 0.0):
        super().__init__()
        dims = [in_channels] + [channels] * num_convs
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in zip(dims[:-1], dims[1:]))
        self.head = nn.Linear(channels, out_dim)
        self.act, self.dropout = ACTIVATIONS[activation], dropout

    def forward(self, x):
        for conv in self.convs:
            x = self.act(conv(x))
        return self.head(F.dropout(x.mean(dim=(2, 3)), self.dropout, self.training))


class Siren(MLP):
    """SIREN implicit neural representation ``coords [B, 2] -> values [B, 1]``: ``sin(w0 * (W x + b))``
    between layers, with the SIREN initialization."""

    def __init__(self, widths: list[int], in_dim: int = 2, out_dim: int = 1, w0: float = 30.0):
        super().__init__(in_dim, widths, out_dim, "sine")
        self.w0 = w0
        with torch.no_grad():
            for i, layer in enumerate(self.layers):
                bound = 1 / layer.in_features if i == 0 else math.sqrt(6 / layer.in_features) / w0
                layer.weight.uniform_(-bound, bound)

    def forward(self, x):
        for layer in self.layers[:-1]:
            x = torch.sin(self.w0 * layer(x))
        return self.layers[-1](x)


class _Linear(nn.Module):
    """Holder giving a linear layer the ``dense`` name BERT uses."""

    def __init__(self, a: int, b: int, norm: bool = False):
        super().__init__()
        self.dense = nn.Linear(a, b)
        if norm:
            self.LayerNorm = nn.LayerNorm(b)


class _SelfAttention(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)


class _Attention(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.self = _SelfAttention(dim)
        self.output = _Linear(dim, dim, norm=True)


class _Layer(nn.Module):
    def __init__(self, dim: int, ffn: int):
        super().__init__()
        self.attention = _Attention(dim)
        self.intermediate = _Linear(dim, ffn)
        self.output = _Linear(ffn, dim, norm=True)


class _Embeddings(nn.Module):
    def __init__(self, vocab: int, max_len: int, dim: int):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, dim)
        self.position_embeddings = nn.Embedding(max_len, dim)
        self.LayerNorm = nn.LayerNorm(dim)


class _Encoder(nn.Module):
    def __init__(self, dim: int, ffn: int, num_layers: int):
        super().__init__()
        self.layer = nn.ModuleList(_Layer(dim, ffn) for _ in range(num_layers))


class TinyBert(nn.Module):
    """BERT-style encoder with Hugging Face parameter names: ``tokens [B, T] (int) -> [B, out]``
    (post-LayerNorm, GELU FFN, tanh pooler over the first token, linear classifier)."""

    def __init__(self, vocab: int, max_len: int, dim: int, heads: int, ffn: int, num_layers: int,
                 out_dim: int, dropout: float = 0.0):
        super().__init__()
        self.embeddings = _Embeddings(vocab, max_len, dim)
        self.encoder = _Encoder(dim, ffn, num_layers)
        self.pooler = _Linear(dim, dim)
        self.classifier = nn.Linear(dim, out_dim)
        self.heads, self.dropout = heads, dropout

    def forward(self, tokens):
        b, t = tokens.shape
        e = self.embeddings
        x = e.LayerNorm(e.word_embeddings(tokens) + e.position_embeddings(torch.arange(t, device=tokens.device)))
        for layer in self.encoder.layer:
            att = layer.attention.self
            q, k, v = (m(x).view(b, t, self.heads, -1).transpose(1, 2) for m in (att.query, att.key, att.value))
            a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, -1)
            out = layer.attention.output
            x = out.LayerNorm(x + F.dropout(out.dense(a), self.dropout, self.training))
            h = F.gelu(layer.intermediate.dense(x))
            x = layer.output.LayerNorm(x + F.dropout(layer.output.dense(h), self.dropout, self.training))
        return self.classifier(torch.tanh(self.pooler.dense(x[:, 0])))
