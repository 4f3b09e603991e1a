"""Weight matching (Git Re-Basin, Ainsworth et al. 2023) under permutation, sign and positive-scale
symmetries.

Model B is aligned to model A by a group element ``g`` (see :mod:`pipeline.symmetry`) maximizing
``J(g) = sum_t <A_t, (g . B)_t>`` over all tensors, in a scale-free *matching space*:

* ``perm_scale`` groups (ReLU family) are first normalized in both models
  (:func:`pipeline.symmetry.canonical_scaling`: each neuron's incoming weights and bias, after the
  upstream normalization, get unit norm; its outgoing weights carry the scale). Both models'
  normalizers ``n_A, n_B`` are group elements, so the scale is carried through: the answer is
  ``g = n_B, then m, then n_A^-1`` for the matching-space element ``m``, and aligned B has A's
  per-neuron scales.
* ``m`` is found by coordinate descent over linear assignment problems: for one permutation ``p``
  (the others fixed) ``J`` is ``sum_j q_j C[j, p_j]`` plus a constant, with
  ``C = sum over p's axes of A (axis first, flattened) @ B (others applied)^T``. Plain groups solve
  ``max_p sum_j C[j, p_j]``; ``perm_sign`` groups (tanh, sine) solve it on ``|C|`` and take
  ``q_j = sign(C[j, p_j])`` (the seed's Algorithm 1), exact for a fixed ``C``. Attention heads are
  matched whole: per head pair the within-head assignment's value, then an assignment over heads
  (under grouped-query attention, key/value heads carry their query heads, matched among
  themselves; rotary query/key dimensions stay in place).
  Units are visited in random order until a sweep brings no improvement; a unit whose neighbouring
  permutations did not change since it was last solved is skipped (same costs, same answer).
* Restarts keep the best ``J``: first a *forward* start (units in depth order, each solved from the
  axes whose other permutations are already solved -- incoming weights from solved layers, outgoing
  weights to unpermuted outputs -- as a layer-by-layer match does), then the identity, then random
  permutations. A restart costs one to three descents, so restarts are spent within a work budget
  (``RESTART_BUDGET``): small models get all of them, wide ones (a 256-wide MLP and up) one descent.

Cost matrices are float32 BLAS products, cached per axis until a neighbouring permutation changes.
The LAP solver is LAPJV (the ``lapjv`` package, float32, certified by its duals; scipy's exact
solver where the certificate fails or the package is missing).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

try:
    from lapjv import lapjv
except ImportError:  # no build for this platform (it is a Linux/Windows dependency): scipy solves
    lapjv = None

from pipeline.checkpoint.dtypes import is_float
from pipeline.graph.schema import WeightGraph
from pipeline.numerics import TINY
from pipeline.rebasin.spec import Axis, PermutationSpec, permutation_spec, same_architecture
from pipeline.symmetry import GroupElement, apply, canonical_scaling, compose, inverse, random_element

WORK_DTYPE = np.float32
_RTOL = 1e-10      # a unit update must raise its part of J by more than this, relatively
RESTART_BUDGET = 2.0 ** 27  # assignment work (n^3 per n x n LAP; this: one 512 x 512) for restarts
_LAP_GAP = 4.0     # LAPJV's answer is kept when provably this close to the optimum (see _lap)


@dataclass
class MatchResult:
    """``aligned``: B's state dict transformed by ``element`` (``symmetry.apply(graph_b, element)``, B's
    dtypes); ``objective`` / ``naive_objective``: ``J`` in matching space for the found element and
    for none; ``similarity`` / ``naive_similarity``: the same as cosines (``J / (|A| |B|)``);
    ``restart``: the start that won, of the ``starts`` run; ``sweeps``: its sweeps."""
    aligned: dict[str, np.ndarray]
    element: GroupElement
    objective: float
    naive_objective: float
    similarity: float
    naive_similarity: float
    sweeps: int
    restart: int
    starts: int
    seconds: float


def match(graph_a: WeightGraph, graph_b: WeightGraph, restarts: int = 3, budget: float = RESTART_BUDGET,
          scale: bool = True, sign: bool = True, max_sweeps: int = 100, seed: int = 0,
          rescale: bool = True) -> MatchResult:
    """Align B to A. ``restarts``: at most this many starts; ``budget``: a start after the first begins
    only while the assignment work so far plus the first descent's is within it (``n^3`` per ``n x n``
    LAP; ``float("inf")``: always all ``restarts``). ``scale`` / ``sign``: use the positive-scale /
    sign symmetries where the graph has them (else those groups are matched by permutation only).
    ``rescale``: the element is the full ``n_B, m, n_A^-1`` (aligned B gets A's per-neuron scales);
    else only ``m``'s permutations and signs (B keeps its own scales: a safer interpolation end for
    ReLU models whose per-neuron scales differ wildly from A's). Raises ``ValueError`` when the two
    graphs differ in architecture."""
    started = time.perf_counter()
    if not same_architecture(graph_a, graph_b):
        raise ValueError("models differ in architecture; weight matching needs one spec for both")
    spec = permutation_spec(graph_a)
    used = {"perm_scale": scale, "perm_sign": sign}
    sym = {i: s if used.get(s, True) else "perm" for i, s in spec.symmetry.items()}
    norm_a, norm_b = (canonical_scaling(g).factors if scale else {} for g in (graph_a, graph_b))
    a, b = _to_matching_space(spec, graph_a, norm_a), _to_matching_space(spec, graph_b, norm_b)
    constant = sum(float(np.vdot(np.asarray(t, np.float64), np.asarray(graph_b.tensors[n], np.float64)))
                   for n, t in graph_a.tensors.items() if n not in spec.views and is_float(t.dtype))
    descent = _Descent(spec, sym, a, b)
    rng = np.random.default_rng(seed)
    naive = descent.objective({}, {}) + constant
    best, first, starts = None, 0, 0
    for restart in range(max(1, restarts)):
        if restart and descent.work + first > budget:
            break
        start = {} if restart < 2 else random_element(graph_a, rng, scale=False, sign=False).perms
        perms, signs, sweeps = descent.run(dict(start), rng, max_sweeps, forward=restart == 0)
        starts, first = restart + 1, first or descent.work
        value = descent.objective(perms, signs) + constant
        if best is None or value > best[0] + _RTOL * abs(best[0]):
            best = (value, perms, signs, sweeps, restart)
    value, perms, signs, sweeps, restart = best
    found = GroupElement(perms, {i: q for i, q in signs.items() if np.any(q < 0)})
    element = compose(graph_b, compose(graph_b, GroupElement(factors=norm_b), found),
                      inverse(graph_a, GroupElement(factors=norm_a))) if rescale else found
    sizes = np.sqrt(descent.squared_norm(a) + _squared_rest(graph_a, spec)) * np.sqrt(
        descent.squared_norm(b) + _squared_rest(graph_b, spec))
    return MatchResult(apply(graph_b, element), element, value, naive, value / max(sizes, TINY),
                       naive / max(sizes, TINY), sweeps, restart, starts, time.perf_counter() - started)


def matching_objective(graph_a: WeightGraph, tensors_b: dict[str, np.ndarray]) -> float:
    """``sum_t <A_t, B_t>`` over the float tensors, in raw weights (the permutation-only objective that
    Git Re-Basin and the ``rebasin`` package maximize)."""
    return sum(float(np.vdot(np.asarray(t, np.float64), np.asarray(tensors_b[n], np.float64)))
               for n, t in graph_a.tensors.items() if is_float(t.dtype))


def _squared_rest(graph: WeightGraph, spec: PermutationSpec) -> float:
    return sum(float(np.vdot(*(np.asarray(t, np.float64),) * 2)) for n, t in graph.tensors.items()
               if n not in spec.views and is_float(t.dtype))


def _along(q: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    return q.reshape((1,) * axis + (-1,) + (1,) * (ndim - axis - 1))


def _act(spec: PermutationSpec, tensor: str, array: np.ndarray, perms: dict, factors: dict,
         skip: int | None = None) -> np.ndarray:
    """``array`` (edge view) with the permutations and factors applied on every acted axis but ``skip``."""
    for ax in spec.tensor_axes[tensor]:
        if ax.axis == skip:
            continue
        perm, q = perms.get(spec.key_of[ax.group]), factors.get(ax.group)
        if perm is not None:
            array = np.take(array, perm, axis=ax.axis)
        if q is not None:
            array = array * _along(q if ax.produces else 1.0 / q, ax.axis, array.ndim)
    return array


def _to_matching_space(spec: PermutationSpec, graph: WeightGraph, factors: dict) -> dict[str, np.ndarray]:
    """Edge views in the work dtype with the scale normalizer's ``factors`` applied."""
    return {t: _act(spec, t, np.asarray(graph.tensors[t], WORK_DTYPE).reshape(shape), {}, factors)
            .astype(WORK_DTYPE, copy=False) for t, shape in spec.views.items()}


def _dot(x: np.ndarray, y: np.ndarray) -> float:
    """``<x, y>`` of two float arrays, accumulated in float64."""
    return float(np.einsum("i,i->", x.reshape(-1), y.reshape(-1), dtype=np.float64))


def _lap(cost: np.ndarray) -> np.ndarray:
    """Columns of the maximizing assignment (rows in order). LAPJV (``lapjv``, float32 arithmetic)
    where installed, its answer certified in float64 by its dual potentials: kept when provably within
    ``_LAP_GAP * n`` float32 roundings of the largest cost from the optimum (the order of the float32
    cost products' own rounding), else scipy's exact solver answers."""
    if lapjv is not None:
        cols, _, (_, u, v) = lapjv(np.negative(cost, dtype=np.float32))
        u, v = u.astype(np.float64), v.astype(np.float64)
        # Dual slacks of the minimization of -cost: s_ij = -cost_ij - u_i - v_j, each meant to be >= 0.
        # Any assignment costs >= sum(u) + sum(v) + n min(0, min s), so the gap is at most this:
        row_max = np.add(cost, v, dtype=np.float64).max(axis=1)
        gap = -np.sum(cost[np.arange(len(cols)), cols], dtype=np.float64) - u.sum() - v.sum() \
            - len(cols) * min(0.0, float(np.min(-row_max - u)))
        scale = max(float(cost.max()), -float(cost.min()), TINY)
        if gap <= _LAP_GAP * len(cols) * np.finfo(np.float32).eps * scale:
            return cols.astype(np.int64)
    return linear_sum_assignment(cost, maximize=True)[1]


class _Descent:
    """Coordinate descent over the spec's units, for fixed matching-space arrays ``a`` and ``b``."""

    def __init__(self, spec: PermutationSpec, sym: dict[int, str], a: dict, b: dict):
        self.spec, self.sym, self.a, self.b = spec, sym, a, b
        self.rows = {ax: np.ascontiguousarray(np.moveaxis(a[ax.tensor], ax.axis, 0)).reshape(
            spec.perms[spec.key_of[ax.group]].size, -1) for p in spec.perms.values() for ax in p.axes}
        self.sign_groups = [i for i, s in sym.items() if s == "perm_sign"]
        self.work = 0      # assignment work so far: n^3 per n x n LAP solved

    def squared_norm(self, arrays: dict) -> float:
        return sum(_dot(v, v) for v in arrays.values())

    def objective(self, perms: dict, signs: dict) -> float:
        """``J`` over the acted tensors, in float64."""
        return sum(_dot(self.a[t], _act(self.spec, t, v, perms, signs)) for t, v in self.b.items())

    def run(self, perms: dict, rng: np.random.Generator, max_sweeps: int, forward: bool = False):
        """Descend from ``perms`` (missing keys: identity), after a forward pass if ``forward``."""
        spec = self.spec
        self.perms = {k: perms.get(k, np.arange(p.size)) for k, p in spec.perms.items()}
        self.signs = {i: np.ones(spec.perms[spec.key_of[i]].size) for i in self.sign_groups}
        self.version = dict.fromkeys(spec.perms, 0)
        self.cache: dict[Axis, tuple] = {}
        self.solved_at: dict[tuple[str, ...], tuple] = {}
        if forward:
            solved: set[str] = set()
            for unit in spec.units:
                self._update(unit, solved)
                solved.update(unit)
        sweeps = 0
        for sweeps in range(1, max_sweeps + 1):
            improved = False
            for u in rng.permutation(len(spec.units)):
                improved |= self._update(spec.units[u])
            if not improved:
                break
        return self.perms, self.signs, sweeps

    def _cost(self, ax: Axis) -> np.ndarray:
        """``C`` of one axis: A's rows along it against B's, all other acted axes transformed."""
        others = [o for o in self.spec.tensor_axes[ax.tensor] if o.axis != ax.axis]
        stamp = tuple(self.version[self.spec.key_of[o.group]] for o in others)
        hit = self.cache.get(ax)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        b = _act(self.spec, ax.tensor, self.b[ax.tensor], self.perms, self.signs, skip=ax.axis)
        rows = self.rows[ax]
        cost = rows @ np.moveaxis(b, ax.axis, 0).reshape(rows.shape[0], -1).T
        self.cache[ax] = (stamp, cost)
        return cost

    def _stamp(self, unit: tuple[str, ...]) -> tuple[int, ...]:
        """The versions of the permutations that the unit's cost matrices depend on."""
        return tuple(self.version[self.spec.key_of[o.group]] for key in unit for ax in self.spec.perms[key].axes
                     for o in self.spec.tensor_axes[ax.tensor] if o.axis != ax.axis)

    def _update(self, unit: tuple[str, ...], solved: set[str] | None = None) -> bool:
        """Re-solve the permutations (and signs) of one unit; keep them if ``J`` rises. With ``solved``
        (the forward pass), solve from the axes whose other permutations are all solved (all axes if
        none is) and keep the answer. Exact skip: a unit whose neighbours are unchanged since it was
        last solved from all its axes is not solved again (same costs, same answer, same decision)."""
        stamp = self._stamp(unit)
        if solved is None and self.solved_at.get(unit) == stamp:
            return False
        parts, full = {}, True
        for key in unit:
            plain, signed = 0.0, {}
            axes = self.spec.perms[key].axes
            if solved is not None:
                anchored = [ax for ax in axes if all(self.spec.key_of[o.group] in solved
                                                     for o in self.spec.tensor_axes[ax.tensor] if o.axis != ax.axis)]
                full &= len(anchored) in (0, len(axes))
                axes = anchored or axes
            for ax in axes:
                if self.sym[ax.group] == "perm_sign":
                    signed[ax.group] = signed.get(ax.group, 0.0) + self._cost(ax)
                else:
                    plain = plain + self._cost(ax)
            total = plain + sum(np.abs(c) for c in signed.values())
            parts[key] = (np.broadcast_to(total, (self.spec.perms[key].size,) * 2), plain, signed)
        if full:
            self.solved_at[unit] = stamp
        new = self._solve(unit, {k: p[0] for k, p in parts.items()})
        old_value = new_value = 0.0
        for key, (total, plain, signed) in parts.items():
            rows, old = np.arange(len(new[key])), self.perms[key]
            old_value += float(np.sum(np.broadcast_to(plain, total.shape)[rows, old], dtype=np.float64))
            old_value += sum(float(np.sum(self.signs[i] * c[rows, old], dtype=np.float64)) for i, c in signed.items())
            new_value += float(np.sum(total[rows, new[key]], dtype=np.float64))
        if solved is None and new_value <= old_value + _RTOL * max(abs(old_value), abs(new_value)):
            return False
        for key, (total, plain, signed) in parts.items():
            self.perms[key] = new[key]
            for i, c in signed.items():
                self.signs[i] = np.where(c[np.arange(len(new[key])), new[key]] < 0, -1.0, 1.0)
            self.version[key] += 1
        return True

    def _solve(self, unit: tuple[str, ...], totals: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The maximizing permutation of each key; for heads, see :meth:`_solve_heads`."""
        p = self.spec.perms[unit[0]]
        if p.heads == 1:
            self.work += p.size ** 3
            return {unit[0]: _lap(totals[unit[0]])}
        return self._solve_heads(unit, totals)

    def _solve_heads(self, unit: tuple[str, ...], totals: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A head group's permutations: key/value heads whole, by the value of the best match of each
        head pair, then the units within each matched pair.

        Keys of ``h`` heads (the key/value heads) and, under grouped-query attention, of ``h r`` heads
        (the query heads, ``r`` per key/value head) share one head permutation ``sigma`` of the
        ``h``; the ``r`` query heads of a matched pair ``s -> t`` are matched by an ``r x r``
        assignment ``tau``, and units within a head by one assignment per ``perm_group`` shared by
        the pair and its query heads (none where ``fixed``: rotary dimensions stay in place). For one
        pair, ``tau`` and the within-head assignments are solved alternately (each exact given the
        other), from ``tau`` matched on each query head pair's own best value."""
        perms = {k: self.spec.perms[k] for k in unit}
        h = min(p.heads for p in perms.values())
        r = max(p.heads for p in perms.values()) // h
        width = {p.perm_group: p.size // p.heads for p in perms.values()}
        blocks = {k: totals[k].reshape(p.heads, width[p.perm_group], p.heads, width[p.perm_group])
                  for k, p in perms.items()}
        by_group: dict[str, dict[bool, str]] = {}
        for k, p in perms.items():
            by_group.setdefault(p.perm_group, {})[p.heads > h] = k
        fixed = {g: perms[next(iter(keys.values()))].fixed for g, keys in by_group.items()}
        self.work += h * h * (r * r + 2) * sum(d ** 3 for d in width.values()) + h ** 3
        grouped = [g for g, keys in by_group.items() if True in keys]

        def assign(cost: np.ndarray, group: str) -> np.ndarray:
            return np.arange(width[group]) if fixed[group] else _lap(cost)

        def pair(s: int, t: int) -> tuple[float, np.ndarray, dict[str, np.ndarray]]:
            """The value, ``tau`` and within-head assignments of key/value head pair ``s -> t``."""
            def query(group: str, i: int, j: int) -> np.ndarray:
                return blocks[by_group[group][True]][s * r + i, :, t * r + j, :]

            def cost(group: str, tau: np.ndarray) -> np.ndarray:
                keys = by_group[group]
                own = blocks[keys[False]][s, :, t, :] if False in keys else 0.0
                return own + sum(query(group, i, tau[i]) for i in range(r)) if True in keys else own

            def match_queries(within: dict | None) -> np.ndarray:
                values = [[sum(float(c[np.arange(len(c)), assign(c, g) if within is None else within[g]].sum())
                               for g in grouped for c in (query(g, i, j),)) for j in range(r)] for i in range(r)]
                return _lap(np.array(values))

            tau = match_queries(None) if r > 1 else np.arange(1)
            for _ in range(2 if r > 1 else 1):
                within = {g: assign(cost(g, tau), g) for g in by_group}
                tau = match_queries(within) if r > 1 else tau
            value = sum(float(cost(g, tau)[np.arange(width[g]), within[g]].sum()) for g in by_group)
            return value, tau, within

        solved = [[pair(s, t) for t in range(h)] for s in range(h)]
        sigma = _lap(np.array([[solved[s][t][0] for t in range(h)] for s in range(h)]))
        out = {}
        for k, p in perms.items():
            rows = []
            for s in range(h):
                _, tau, within = solved[s][sigma[s]]
                heads = [sigma[s] * r + tau[i] for i in range(r)] if p.heads > h else [sigma[s]]
                rows += [head * width[p.perm_group] + within[p.perm_group] for head in heads]
            out[k] = np.concatenate(rows)
        return out
