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

import torch

from pipeline.encoders.graph_input import GraphInput
from pipeline.numerics import TINY

#: features per weighted block (see :func:`weight_statistics`); the last ``NUM_PROBE_STATISTICS``
#: come from the probe inputs' values
NUM_STATISTICS = 23
NUM_PROBE_STATISTICS = 9


def weight_statistics(graph: GraphInput, factors: dict[int, torch.Tensor],
                      values: dict[int, torch.Tensor] | None) -> torch.Tensor | None:
    """``[count, weighted blocks, NUM_STATISTICS]`` float64 for a :func:`stacked
    <pipeline.encoders.graph_input.stack>` input of ``count`` models, or ``None`` if no block has weights.

    ``factors``: the canonical scaling's per-group factors, ``[count, size]`` each (incoming weights
    and bias of group ``i`` multiplied by ``factors[i]``, its outgoing weights divided by them);
    ``values``: every group's values at the probe inputs (:func:`~pipeline.encoders.executor.probe_values`
    of the stack), or ``None``.
    A block's row: moments of its canonical ``|w|`` (5), the log of its shape (3), the spread of its
    units' incoming and outgoing norms (2), its destination's bias moments (2), the two groups'
    depths (2), and its destination's values at the probes (:func:`_value_moments`, 9)."""
    rows, by_group = [], {}  # a destination's bias and value moments, computed once for all its blocks
    for b in graph.blocks:
        if b.weight is None:
            continue
        w = b.weight.to(torch.float64, copy=True).abs_()  # [count, dst, src, F]: one float64 copy, transformed in place
        if b.dst in factors:
            w.mul_(factors[b.dst][:, :, None, None])
        if b.src in factors:
            w.div_(factors[b.src][:, None, :, None])
        squares = w.square()
        constant = lambda v: w.new_full((graph.count,), v)  # noqa: E731
        dst, src = graph.groups[b.dst], graph.groups[b.src]
        if b.dst not in by_group:
            by_group[b.dst] = _group_moments(graph, b.dst, factors, values)
        rows.append(torch.stack(_moments(w, squares) + [constant(math.log(n)) for n in w.shape[1:]]
                                + [_log_spread(squares.sum((2, 3))), _log_spread(squares.sum((1, 3)))]
                                + by_group[b.dst][0]
                                + [constant(dst.depth), constant(src.depth)] + by_group[b.dst][1], 1))
    return torch.stack(rows, 1) if rows else None


def _group_moments(graph: GraphInput, i: int, factors: dict, values: dict | None) -> tuple[list, list]:
    """Group ``i``'s bias moments and value moments (see :func:`weight_statistics`)."""
    return (_bias_moments(graph.groups[i], factors.get(i), graph.count),
            _value_moments(None if values is None else values[i], factors.get(i), graph.count))


def _moments(a: torch.Tensor, squares: torch.Tensor | None = None) -> list[torch.Tensor]:
    """``a``: absolute values ``[count, ...]`` (``squares``: ``a ** 2`` where the caller has it) ->
    per model ``[count]`` float64: log RMS, mean/RMS, log(max/RMS), log kurtosis and the fraction of
    entries below 1% of the RMS. At most one temporary of ``a``'s size at a time."""
    dims, size = tuple(range(1, a.ndim)), a[0].numel()
    rms = (a.square() if squares is None else squares).mean(dims).double().sqrt().clamp_min(TINY)
    per_model = lambda t: t.to(a.dtype).reshape(-1, *[1] * (a.ndim - 1))  # noqa: E731
    kurtosis = (a / per_model(rms)).square_().square_().mean(dims).double().clamp_min(TINY)
    return [rms.log(), a.mean(dims).double() / rms, (a.amax(dims).double() / rms).clamp_min(TINY).log(),
            kurtosis.log(), (a < per_model(0.01 * rms)).sum(dims).double() / size]


def _log_spread(squares: torch.Tensor) -> torch.Tensor:
    """``[count]``: standard deviation of the log of per-unit squared norms ``[count, units]``."""
    if squares.shape[1] < 2:
        return squares.new_zeros(len(squares))
    return squares.clamp_min(TINY).log().std(1)


def _bias_moments(group, factor: torch.Tensor | None, count: int) -> list[torch.Tensor]:
    """log RMS and log(max/RMS) of the group's canonical ``|bias|``, ``[count]`` each; zeros without a bias."""
    if group.bias is None:
        return [torch.zeros(count, dtype=torch.float64)] * 2
    b = group.bias.double().abs()
    if factor is not None:
        b = b * factor
    moments = _moments(b)
    return [moments[0], moments[2]]


def _value_moments(x: torch.Tensor | None, factor: torch.Tensor | None, count: int) -> list[torch.Tensor]:
    """A group's canonical ``|values|`` at the probes (``x [count, P, size, ...]``): their moments (5),
    the share of dead units (below 1% of the RMS at every probe), the spread of the units' log RMS
    (standard deviation, max - median) and 1, ``[count]`` each; zeros without values."""
    if x is None:
        return [torch.zeros(count, dtype=torch.float64)] * NUM_PROBE_STATISTICS
    a = x.abs()
    if factor is not None:
        a.mul_(factor.to(a.dtype).reshape(count, 1, -1, *[1] * (a.ndim - 3)))
    squares = a.square()
    moments = _moments(a, squares)
    rms = moments[0].exp()[:, None]
    per_unit = lambda t: t.reshape(*t.shape[:3], -1)  # noqa: E731  [count, P, size, pixels]
    dead = (per_unit(a).amax(3).amax(1).double() < 0.01 * rms).double().mean(1)
    unit_rms = (per_unit(squares).mean(3).mean(1).double().sqrt() / rms).clamp_min(1e-6).log()  # [count, size]
    if unit_rms.shape[1] > 1:
        spread = [unit_rms.std(1), unit_rms.amax(1) - unit_rms.median(1).values]
    else:
        spread = [torch.zeros(count, dtype=torch.float64)] * 2
    return moments + [dead, *spread, torch.ones(count, dtype=torch.float64)]
