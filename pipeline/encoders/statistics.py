"""Weight statistics: moments of each weight block in the network's scale canonical form.

Message passing over canonicalized node states sees directions, not magnitudes; yet how large and how
heavy-tailed a trained network's weights are says much about how it was trained and how well it
performs (Unterthiner et al., 2020, predict accuracy from such statistics). Here each block's weights
(edge view ``[dst, src, F]``) are first brought to the scale canonical form
(:func:`pipeline.symmetry.canonical_scaling`), then summarized by moments of ``|w|`` and sums over
all entries: exactly invariant to hidden-neuron permutations (sums), sign flips (``|w|``) and
positive per-neuron scalings (the canonical form).
"""
from __future__ import annotations

import math

import numpy as np
import torch

#: features per weighted block: 8 weight moments, 2 bias moments of the destination, 2 depths
NUM_STATISTICS = 12
_TINY = 1e-30


def _moments(a: torch.Tensor) -> list[float]:
    """``a``: ``|w|`` float64, any shape -> log RMS, mean/RMS, log(max/RMS), log kurtosis and the
    fraction of entries below 1% of the RMS."""
    rms = a.square().mean().sqrt().clamp_min(_TINY)
    kurtosis = (a / rms).pow(4).mean().clamp_min(_TINY)
    return [float(rms.log()), float(a.mean() / rms), float((a.max() / rms).clamp_min(_TINY).log()),
            float(kurtosis.log()), float((a < 0.01 * rms).double().mean())]


def weight_statistics(blocks: list, groups: list, factors: dict[int, np.ndarray]) -> torch.Tensor | None:
    """``[num weighted blocks, NUM_STATISTICS]`` float64, or ``None`` if no block has weights.

    ``blocks``/``groups``: the prepared :class:`~pipeline.encoders.inputs.Block` and ``Group`` lists;
    ``factors``: the canonical scaling's per-group factors (incoming weights and bias of group ``i``
    multiplied by ``factors[i]``, its outgoing weights divided by them)."""
    rows = []
    scale = {i: torch.from_numpy(np.asarray(f, dtype=np.float64)) for i, f in factors.items()}
    for b in blocks:
        if b.weight is None:
            continue
        w = b.weight.double().abs()
        if b.dst in scale:
            w = w * scale[b.dst][:, None, None]
        if b.src in scale:
            w = w / scale[b.src][None, :, None]
        rows.append(_moments(w) + [math.log(n) for n in w.shape]
                    + _bias_moments(groups[b.dst], scale.get(b.dst)) + [groups[b.dst].depth, groups[b.src].depth])
    return torch.tensor(rows, dtype=torch.float64) if rows else None


def _bias_moments(group, factor: torch.Tensor | None) -> list[float]:
    """log RMS and log(max/RMS) of the group's canonical ``|bias|``; zeros without a bias."""
    if group.bias is None:
        return [0.0, 0.0]
    b = group.bias.double().abs()
    if factor is not None:
        b = b * factor
    moments = _moments(b)
    return [moments[0], moments[2]]
