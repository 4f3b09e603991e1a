"""Edge bases: elementwise functions of a block's weights ``[*, dst, src, F]`` (``*``: models of one
architecture batched) that condition messages."""
from __future__ import annotations

import torch

from pipeline.numerics import TINY


def _rel_abs(w: torch.Tensor) -> torch.Tensor:
    return w.abs() / torch.linalg.vector_norm(w, dim=(-3, -2, -1), keepdim=True).clamp_min(TINY)  # per model


EDGE_BASES = {
    "w": lambda w: w,                 # linear in the weights: keeps scale equivariance
    "abs": torch.abs,
    "sq": torch.square,
    "rel_abs": _rel_abs,              # |w| / ||W||_F, the per-layer encoder's edge feature
}


def edge_bases(weight: torch.Tensor, names: tuple[str, ...]) -> list[torch.Tensor]:
    return [EDGE_BASES[n](weight) for n in names]
