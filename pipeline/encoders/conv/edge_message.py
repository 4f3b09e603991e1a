"""Edge-conditioned aggregation over one dense block of edges, as matrix products (an NNConv-style
edge-conditioned convolution, Gilmer et al. 2017, with the weight-space edge features of Neural
Graphs and ScaleGMN)."""
from __future__ import annotations

import math

import torch
from torch import nn


class EdgeMessage(nn.Module):
    r"""Messages from the source nodes of a block to its destination nodes.

    .. math::
        m_j = \frac{1}{n_{src}} \sum_i \sum_b \sum_f B_b(w_{ij})_f \; x_i A_{b,f}

    where :math:`B_b` are elementwise *edge bases* of the block's weights (e.g. :math:`w`,
    :math:`|w|/\|W\|_F`), :math:`f` runs over the edge's feature positions (a conv kernel; positions
    past ``max_kernel`` share the last matrix) and :math:`A_{b,f} \in \mathbb{R}^{d_{in} \times d_{out}}`
    are learned. Computed as :math:`\sum_{b,f} (B_b[:, :, f] X) A_{b,f}`: time linear in the number of
    edges, memory :math:`O((n_{dst} + n_{src}) d)`; no :math:`E \times d` tensor is formed.

    Args:
        num_bases: number of edge bases :math:`B_b`.
        d_in, d_out: source state and message widths.
        max_kernel: feature positions with a matrix of their own.

    Shapes: bases ``[*, n_dst, n_src, F]`` each, ``x [*, n_src, d_in]`` -> ``[*, n_dst, d_out]``
    (``*``: leading batch dimensions, e.g. models of one architecture); for a block in ``g`` channel
    groups (grouped and depthwise convolutions: destination ``j`` reads the ``n_src / g`` sources of
    its group) bases ``[*, n_dst, n_src / g, F]``.
    Equivariant to permutations of source and destination nodes; linear in each basis, so with the
    single basis :math:`w` a message scales exactly as the weights do.
    """

    def __init__(self, num_bases: int, d_in: int, d_out: int, max_kernel: int = 9):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_bases, max_kernel, d_in, d_out) / math.sqrt(d_in * num_bases))

    def forward(self, bases: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        max_kernel = self.weight.shape[1]
        out = None
        for b, basis in enumerate(bases):
            n_dst, n_src, feat = basis.shape[-3:]
            if n_src != x.shape[-2]:                                  # channel groups
                groups = x.shape[-2] // n_src
                own = x.reshape(*x.shape[:-2], groups, n_src, x.shape[-1]).repeat_interleave(n_dst // groups, -3)
                z = torch.einsum("...dsf,...dsc->...dfc", basis, own)  # [..., dst, F, d_in]
            elif feat == 1:
                z = (basis[..., 0] @ x).unsqueeze(-2)                 # [..., dst, 1, d_in]
            else:                                                     # [..., dst, F, d_in], one matmul
                z = (basis.transpose(-1, -2).reshape(*basis.shape[:-3], n_dst * feat, n_src) @ x).unflatten(-2, (n_dst, feat))
            if feat > max_kernel:
                z = torch.cat([z[..., :max_kernel - 1, :], z[..., max_kernel - 1:, :].sum(-2, keepdim=True)], -2)
            weight = self.weight[b, :z.shape[-2]]                     # [F', d_in, d_out]
            term = z.flatten(-2) @ weight.flatten(0, 1)               # sum over positions and channels
            out = term if out is None else out + term
        return out / bases[0].shape[-2]
