"""Per-layer equivariant GNN: the encoder of "Permutation-Equivariant Contrastive Embeddings for Model
Zoo Retrieval" (``shared/seeds/000``): per-layer bipartite graphs, edge-conditioned message passing,
an attention readout per layer and a GRU over layers."""
from __future__ import annotations

import math

import torch
from torch import nn

from pipeline.constants import EMBEDDING_DIM
from pipeline.encoders.bases import edge_bases
from pipeline.encoders.conv import EdgeMessage
from pipeline.encoders.graph_input import GraphInput

_BASES = ("w", "rel_abs")  # edge features [w, |w| / ||W||_F]


def _mlp(d_in: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_out), nn.GELU(), nn.Linear(d_out, d_out))


def _stats(w: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Per-node statistics of a block's weights over ``dims``: mean, std, mean |w|, max |w|."""
    return torch.stack([w.mean(dims), w.std(dims, unbiased=False), w.abs().mean(dims), w.abs().amax(dims)], -1)


class EquivariantGNN(nn.Module):
    r"""Each weight tensor is its own bipartite graph (rows = out-nodes, columns = in-nodes) with edge
    features :math:`[w_{ij}, |w_{ij}| / \|W\|_F]`. Per layer graph, ``layers`` rounds of

    .. math::
        x^{out}_j \leftarrow x^{out}_j + \mathrm{MLP}([x^{out}_j, m^{out}_j]), \quad
        x^{in}_i \leftarrow x^{in}_i + \mathrm{MLP}([x^{in}_i, m^{in}_i])

    with edge-conditioned messages :math:`m` (:class:`EdgeMessage`, the paper's
    :math:`\Gamma(\pi_{ij})` term) in both directions, initialized from per-node weight statistics;
    then an attention readout per side, a GRU over the layers in network order and a linear map.

    Invariant to any permutation of the rows and of the columns of *each* tensor separately. The
    layer graphs share no nodes, so this includes the hidden-neuron symmetry but also **uncoupled**
    permutations (rows of one layer without the next layer's columns), which change the network's
    function: this design is blind to them. Not invariant to scalings. Works on every graph mode (it
    only needs the blocks).

    Args:
        dim: embedding width.
        hidden: node state width.
        layers: message-passing rounds per layer graph.
        max_kernel: edge feature positions with their own message matrix (see :class:`EdgeMessage`).

    Shapes: ``graphs`` (list of ``B`` :class:`GraphInput`) -> ``[B, dim]``.
    """

    def __init__(self, dim: int = EMBEDDING_DIM, hidden: int = 128, layers: int = 4, max_kernel: int = 9):
        super().__init__()
        self.out_init, self.in_init = _mlp(5, hidden), _mlp(4, hidden)
        self.to_out = nn.ModuleList(EdgeMessage(len(_BASES), hidden, hidden, max_kernel) for _ in range(layers))
        self.to_in = nn.ModuleList(EdgeMessage(len(_BASES), hidden, hidden, max_kernel) for _ in range(layers))
        self.update_out = nn.ModuleList(_mlp(2 * hidden, hidden) for _ in range(layers))
        self.update_in = nn.ModuleList(_mlp(2 * hidden, hidden) for _ in range(layers))
        self.attend_out, self.attend_in = nn.Linear(hidden, 1), nn.Linear(hidden, 1)
        self.layer_summary = nn.Linear(2 * hidden + 2, hidden)
        self.gru = nn.GRU(hidden, hidden, batch_first=True)
        self.out = nn.Linear(hidden, dim)

    def layer_vector(self, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """One layer graph ``weight [dst, src, F]`` (+ its out-nodes' bias) -> ``[hidden]``."""
        weight = weight.to(self.out.weight.dtype)
        row = _stats(weight, (1, 2))
        bias = bias if bias is not None else torch.zeros(len(weight), dtype=weight.dtype, device=weight.device)
        x_out = self.out_init(torch.cat([row, bias[:, None]], -1))
        x_in = self.in_init(_stats(weight, (0, 2)))
        bases = edge_bases(weight, _BASES)
        transposed = [b.transpose(0, 1) for b in bases]
        for to_out, to_in, update_out, update_in in zip(self.to_out, self.to_in, self.update_out, self.update_in):
            m_out = to_out(bases, x_in)
            m_in = to_in(transposed, x_out)
            x_out = x_out + update_out(torch.cat([x_out, m_out], -1))
            x_in = x_in + update_in(torch.cat([x_in, m_in], -1))
        pooled_out = (torch.softmax(self.attend_out(x_out), 0) * x_out).sum(0)
        pooled_in = (torch.softmax(self.attend_in(x_in), 0) * x_in).sum(0)
        sizes = torch.tensor([math.log(weight.shape[0]), math.log(weight.shape[1])], dtype=weight.dtype,
                             device=weight.device)
        return self.layer_summary(torch.cat([pooled_out, pooled_in, sizes]))

    def embed_one(self, graph: GraphInput) -> torch.Tensor:
        layers = [self.layer_vector(b.weight, graph.groups[b.dst].bias if graph.mode == "computational" else None)
                  for b in graph.blocks if b.weight is not None]
        _, last = self.gru(torch.stack(layers)[None])
        return self.out(last[0, 0])

    def forward(self, graphs: list[GraphInput]) -> torch.Tensor:
        return torch.stack([self.embed_one(g) for g in graphs])
