"""Node update that respects the symmetry of the node group it acts on (ScaleGMN's scale-equivariant
update, Kalogeropoulos et al. 2024)."""
from __future__ import annotations

import torch
from torch import nn

from pipeline.numerics import TINY


def canonicalize(x: torch.Tensor, symmetry: str) -> torch.Tensor:
    """A function of node states ``[*, n, d]`` invariant to the group's per-node factor ``q``:
    ``x / ||x||`` (positive scaling), ``|x|`` (sign flips), ``x`` otherwise."""
    if symmetry == "perm_scale":
        return x / x.norm(dim=-1, keepdim=True).clamp_min(TINY)
    if symmetry == "perm_sign":
        return x.abs()
    return x


class SymmetricUpdate(nn.Module):
    r"""``x' = x + \phi(x U + m V)`` with :math:`\phi` chosen by the group's symmetry.

    * ``perm_scale`` / ``perm_sign``: :math:`\phi(y) = y \odot \sigma(\mathrm{MLP}(\mathrm{canon}(y)))`,
      no additive biases. If ``x`` and ``m`` scale by the node's :math:`q` (positive, or :math:`\pm 1`),
      so does ``x'``: equivariant (ScaleGMN's gated nonlinearity).
    * otherwise: :math:`\phi(y) = \mathrm{MLP}(y + c)`, a plain update (permutation equivariant).

    Args:
        dim: node state width ``d``.

    Shapes: ``x, m [*, n, d]`` -> ``[*, n, d]`` (``*``: leading batch dimensions); ``context [d]`` is an
    invariant per-group vector (node kind, depth) that only the plain update and the gates see.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.u = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.gate = nn.Sequential(nn.Linear(2 * dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.plain = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, x: torch.Tensor, m: torch.Tensor, symmetry: str, context: torch.Tensor) -> torch.Tensor:
        y = self.u(x) + self.v(m)
        if symmetry in ("perm_scale", "perm_sign"):
            invariant = torch.cat([canonicalize(y, symmetry), context.expand(*y.shape[:-1], -1)], -1)
            return x + y * torch.sigmoid(self.gate(invariant))
        return x + self.plain(y + context)
