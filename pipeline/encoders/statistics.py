"""Weight statistics: moments of each weight block in the network's scale canonical form.

Message passing over canonicalized node states sees directions, not magnitudes; yet how large and how
heavy-tailed a trained network's weights are says much about how it was trained and how well it
performs (Unterthiner et al., 2020, predict accuracy from such statistics). Here each block's weights
(edge view ``[dst, src, F]``) are first brought to the scale canonical form
(:func:`pipeline.symmetry.canonical_scaling`), then summarized by moments of ``|w|`` and sums over
all entries: exactly invariant to hidden-neuron permutations (sums), sign flips (``|w|``) and
positive per-neuron scalings (the canonical form). For networks the probe executor runs
(:mod:`.executor`), each block's row also holds the same moments of its destination's values at the
probe inputs, in the canonical form too: how strongly, how sparsely and how many of its units
respond (dead units, for one, show in no weight moment).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from pipeline.numerics import TINY

#: features per weighted block (see :func:`weight_statistics`); the last ``NUM_PROBE_STATISTICS``
#: come from the probe inputs' values
NUM_STATISTICS = 23
NUM_PROBE_STATISTICS = 9


def weight_statistics(blocks: list, groups: list, factors: dict[int, np.ndarray],
                      values: dict[int, torch.Tensor] | None) -> torch.Tensor | None:
    """``[num weighted blocks, NUM_STATISTICS]`` float64, or ``None`` if no block has weights.

    ``blocks``/``groups``: the prepared :class:`~pipeline.encoders.graph_input.Block` and ``Group`` lists;
    ``factors``: the canonical scaling's per-group factors (incoming weights and bias of group ``i``
    multiplied by ``factors[i]``, its outgoing weights divided by them); ``values``: every group's
    values at the probe inputs (:func:`~pipeline.encoders.executor.probe_values`), or ``None``.
    A block's row: moments of its canonical ``|w|`` (5), the log of its shape (3), the spread of its
    units' incoming and outgoing norms (2), its destination's bias moments (2), the two groups'
    depths (2), and its destination's values at the probes (:func:`_value_moments`, 9)."""
    rows = []
    scale = {i: torch.from_numpy(np.asarray(f, dtype=np.float64)) for i, f in factors.items()}
    for b in blocks:
        if b.weight is None:
            continue
        w = b.weight.to(torch.float64, copy=True).abs_()  # one float64 copy, transformed in place
        if b.dst in scale:
            w.mul_(scale[b.dst][:, None, None])
        if b.src in scale:
            w.div_(scale[b.src][None, :, None])
        squares = w.square()
        rows.append(_moments(w, squares) + [math.log(n) for n in w.shape]
                    + [_log_spread(squares.sum((1, 2))), _log_spread(squares.sum((0, 2)))]
                    + _bias_moments(groups[b.dst], scale.get(b.dst)) + [groups[b.dst].depth, groups[b.src].depth]
                    + _value_moments(None if values is None else values[b.dst], scale.get(b.dst)))
    return torch.tensor(rows, dtype=torch.float64) if rows else None


def _moments(a: torch.Tensor, squares: torch.Tensor | None = None) -> list[float]:
    """``a``: ``|w|`` float64, any shape (``squares``: ``a ** 2`` where the caller has it) -> log
    RMS, mean/RMS, log(max/RMS), log kurtosis and the fraction of entries below 1% of the RMS. At
    most one temporary of ``a``'s size at a time."""
    rms = (a.square() if squares is None else squares).mean().sqrt().clamp_min(TINY)
    kurtosis = (a / rms).square_().square_().mean().clamp_min(TINY)
    return [float(rms.log()), float(a.mean() / rms), float((a.max() / rms).clamp_min(TINY).log()),
            float(kurtosis.log()), float((a < 0.01 * rms).sum().double() / a.numel())]


def _log_spread(squares: torch.Tensor) -> float:
    """Standard deviation of the log of per-unit squared norms ``[units]``."""
    return float(squares.clamp_min(TINY).log().std()) if squares.numel() > 1 else 0.0


def _bias_moments(group, factor: torch.Tensor | None) -> list[float]:
    """log RMS and log(max/RMS) of the group's canonical ``|bias|``; zeros without a bias."""
    if group.bias is None:
        return [0.0, 0.0]
    b = group.bias.double().abs()
    if factor is not None:
        b = b * factor
    moments = _moments(b)
    return [moments[0], moments[2]]


def _value_moments(x: torch.Tensor | None, factor: torch.Tensor | None) -> list[float]:
    """A group's canonical ``|values|`` at the probes (``x [P, size, ...]``): their moments (5), the
    share of dead units (below 1% of the RMS at every probe), the spread of the units' log RMS
    (standard deviation, max - median) and 1; zeros without values."""
    if x is None:
        return [0.0] * NUM_PROBE_STATISTICS
    a = x.abs()
    if factor is not None:
        a = a * factor.reshape(-1, *[1] * (a.ndim - 2))
    rms = a.square().mean().sqrt().clamp_min(TINY)
    per_unit = a.transpose(0, 1).reshape(a.shape[1], -1)
    dead = (per_unit < 0.01 * rms).all(1).double().mean()
    unit_rms = (per_unit.square().mean(1).sqrt() / rms).clamp_min(1e-6).log()
    spread = [float(unit_rms.std()), float(unit_rms.max() - unit_rms.median())] if len(unit_rms) > 1 else [0.0, 0.0]
    return _moments(a) + [float(dead)] + spread + [1.0]
