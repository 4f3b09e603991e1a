"""The symmetry group of a network, acting on its weights: the one definition used by augmentations,
tests and re-basin.

An element is read off a :class:`~pipeline.graph.schema.WeightGraph`'s annotations: for every node
group with a symmetry, a permutation of its nodes (shared by all groups with the same ``perm_group``,
and for attention built from one head permutation per ``head_group`` and one within-head permutation
per head and ``perm_group``), and for ``perm_scale`` / ``perm_sign`` groups a per-node factor ``q``
(positive, or +-1). Acting on the weights, every tensor that *produces* a group's nodes (incoming edge
blocks along their destination axis, the bias, normalization parameters) is permuted and multiplied
by ``q``; every tensor that *reads* them (outgoing blocks along their source axis) is permuted and
divided by ``q``. The network's function is unchanged.

Permutations are ``new <- old`` index arrays: ``new_weights[j] = old_weights[perm[j]]``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from pipeline.graph.schema import GROUPED_EDGES, EdgeBlock, WeightGraph, topological_order
from pipeline.numerics import TINY


@dataclass
class GroupElement:
    """``perms``: permutation per permutation key (see :func:`perm_key`); ``factors``: per node group
    index, the per-node factor ``q`` (absent means 1)."""
    perms: dict[str, np.ndarray] = field(default_factory=dict)
    factors: dict[int, np.ndarray] = field(default_factory=dict)


def perm_key(graph: WeightGraph, index: int) -> str:
    """The key of the permutation acting on node group ``index``: shared within a ``perm_group``
    (and, for heads, a head count: under grouped-query attention a group of ``h_q`` heads and one of
    ``h_kv`` heads in one ``perm_group`` have related but different permutations)."""
    g = graph.node_groups[index]
    if not g.perm_group:
        return f"#{index}"
    return f"{g.perm_group}@{g.heads}" if g.heads > 1 else g.perm_group


def symmetric_groups(graph: WeightGraph) -> list[int]:
    """Indices of the node groups that have a symmetry."""
    return [i for i, g in enumerate(graph.node_groups) if g.symmetry != "none"]


class _HeadPermutations:
    """Random permutations of attention heads and of the units within them, drawn once per head
    group (at its fewest heads, ``h_kv``) and per ``perm_group``, and expanded for groups with more
    heads: query heads move with the key/value head they share, permuted among themselves."""

    def __init__(self, graph: WeightGraph, rng: np.random.Generator):
        self.graph, self.rng = graph, rng
        self.base: dict[str, int] = {}
        for g in graph.node_groups:
            if g.heads > 1:
                for name in (f"h:{g.head_group}", f"p:{g.perm_group}"):
                    self.base[name] = min(self.base.get(name, g.heads), g.heads)
        self.orders: dict[tuple[str, int], np.ndarray] = {}
        self.within: dict[str, list[np.ndarray]] = {}

    def order(self, g) -> np.ndarray:
        """New head position -> old head, for a group of ``g.heads`` heads in ``g.head_group``."""
        base = self.base[f"h:{g.head_group}"]
        if (g.head_group, base) not in self.orders:
            self.orders[g.head_group, base] = self.rng.permutation(base)
        if (g.head_group, g.heads) not in self.orders:
            r = g.heads // base
            shared = self.orders[g.head_group, base]
            self.orders[g.head_group, g.heads] = np.concatenate([shared[a] * r + self.rng.permutation(r)
                                                                 for a in range(base)])
        return self.orders[g.head_group, g.heads]

    def permutation(self, g) -> np.ndarray:
        """The group's permutation: whole heads by :meth:`order`, units within each head by the
        ``perm_group``'s permutation of that head's key/value head (identity for ``fixed`` dims)."""
        dim, base = g.size // g.heads, self.base[f"p:{g.perm_group}"]
        if g.perm_group not in self.within:
            self.within[g.perm_group] = [np.arange(dim) if g.head_dims == "fixed" else self.rng.permutation(dim)
                                         for _ in range(base)]
        within, r = self.within[g.perm_group], g.heads // base
        return np.concatenate([h * dim + within[h // r] for h in self.order(g)])


def random_element(graph: WeightGraph, rng: np.random.Generator, permute: bool = True, scale: bool = True,
                   sign: bool = True, scale_range: tuple[float, float] = (0.25, 4.0)) -> GroupElement:
    """A random group element: uniform permutations (of heads and within heads where the graph has
    heads); log-uniform positive factors in ``scale_range`` for ``perm_scale`` groups; uniform signs
    for ``perm_sign`` groups."""
    element = GroupElement()
    heads = _HeadPermutations(graph, rng)
    for i in symmetric_groups(graph):
        g = graph.node_groups[i]
        key = perm_key(graph, i)
        if permute and key not in element.perms:
            element.perms[key] = heads.permutation(g) if g.heads > 1 else rng.permutation(g.size)
        if g.symmetry == "perm_scale" and scale:
            lo, hi = np.log(scale_range[0]), np.log(scale_range[1])
            element.factors[i] = np.exp(rng.uniform(lo, hi, g.size))
        elif g.symmetry == "perm_sign" and sign:
            element.factors[i] = rng.choice([-1.0, 1.0], g.size)
    return element


def _axes(graph: WeightGraph, block: EdgeBlock) -> tuple[int, int]:
    """(destination axis, source axis) of a block's tensor, in its edge view (see :func:`_edge_view`)."""
    return (1, 0) if block.kind == "embedding" else (0, 1)


def _edge_view(graph: WeightGraph, block: EdgeBlock, tensor: np.ndarray) -> np.ndarray:
    """The tensor with node axes first: ``flatten`` weights ``[dst, src*s]`` seen as ``[dst, src, s]``,
    embedding tables (``[src, dst]``, or with leading unit axes, as ViT's ``[1, positions, dst]``) as
    ``[src, dst]``."""
    if block.kind == "flatten":
        dst, src, s = graph.block_shape(block)
        return tensor.reshape(dst, src, s)
    if block.kind == "embedding":
        dst, src, _ = graph.block_shape(block)
        return tensor.reshape(src, dst)
    return tensor


def apply(graph: WeightGraph, element: GroupElement) -> dict[str, np.ndarray]:
    """The transformed state dict (new float64-computed arrays cast back to each tensor's dtype;
    tensors no symmetry touches are returned as they are). Acts on exactly the axes of
    :func:`acted_axes`."""
    work: dict[str, np.ndarray] = {}
    for name, axis, i, produces, shape in acted_axes(graph):
        perm = element.perms.get(perm_key(graph, i))
        q = element.factors.get(i)
        if perm is None and q is None:
            continue
        size = graph.node_groups[i].size
        perm = np.arange(size) if perm is None else perm
        q = np.ones(size) if q is None else q
        view = work[name] if name in work else np.array(graph.tensors[name], dtype=np.float64)
        moved = np.moveaxis(view.reshape(shape), axis, 0)[perm]
        moved = moved * (q if produces else 1.0 / q).reshape((-1,) + (1,) * (moved.ndim - 1))
        work[name] = np.moveaxis(moved, 0, axis)
    out = dict(graph.tensors)
    for name, array in work.items():
        out[name] = array.reshape(graph.tensors[name].shape).astype(graph.tensors[name].dtype)
    return out


#: the groups an unknown elementwise activation may admit on its hidden neurons, smallest first
CANDIDATE_SYMMETRIES = ("perm", "perm_sign", "perm_scale")


def assuming(graph: WeightGraph, symmetry: str) -> WeightGraph:
    """The graph with its activation-dependent groups (un-normalized hidden groups) annotated
    ``symmetry`` (one of :data:`CANDIDATE_SYMMETRIES`): the group the network would have were its
    activation of that kind (any; odd; ReLU-like). For checkpoints whose activation is unknown."""
    groups = [g._replace(symmetry=symmetry) if g.kind == "hidden" and not g.norm and g.symmetry == "perm" else g
              for g in graph.node_groups]
    return dataclasses.replace(graph, node_groups=groups)


def transformed(graph: WeightGraph, element: GroupElement) -> WeightGraph:
    """The graph with its tensors transformed by ``element`` (see :func:`apply`)."""
    return graph.with_tensors(apply(graph, element))


def breakable_groups(graph: WeightGraph, kinds: tuple[str, ...] | None = None) -> list[int]:
    """The groups :func:`uncoupled_permutation` can break: permutable, of two or more nodes, fed by a
    weight block (``kinds``: only groups of these node kinds)."""
    return [i for i in symmetric_groups(graph) if graph.node_groups[i].size > 1
            and (kinds is None or graph.node_groups[i].kind in kinds)
            and any(b.dst == i and b.tensor for b in graph.edge_blocks)]


def uncoupled_permutation(graph: WeightGraph, rng: np.random.Generator, kinds: tuple[str, ...] | None = None,
                          group: int | None = None) -> dict[str, np.ndarray] | None:
    """Permute the rows of one hidden layer's incoming weights (and bias) *without* the matching
    columns of the next layer: not a symmetry, so the function changes. For negative tests and
    hard negatives. The layer: ``group``, else a random one of :func:`breakable_groups` (of
    ``kinds``). ``None`` when the graph has no such layer (per-layer graphs, linear models)."""
    hidden = breakable_groups(graph, kinds) if group is None else [group]
    if not hidden:
        return None
    i = hidden[rng.integers(len(hidden))]
    g = graph.node_groups[i]
    perm = rng.permutation(g.size)
    while np.array_equal(perm, np.arange(g.size)):
        perm = rng.permutation(g.size)
    out = dict(graph.tensors)
    block = next(b for b in graph.edge_blocks if b.dst == i and b.tensor)
    dst_axis, _ = _axes(graph, block)
    view = _edge_view(graph, block, np.asarray(graph.tensors[block.tensor]))
    out[block.tensor] = np.take(view, perm, axis=dst_axis).reshape(graph.tensors[block.tensor].shape)
    if g.bias:
        out[g.bias] = np.asarray(graph.tensors[g.bias])[perm]
    return out


def canonical_scaling(graph: WeightGraph) -> GroupElement:
    """The positive scaling that gives every ``perm_scale`` neuron incoming weights and bias of unit
    norm, counting the scalings of the groups upstream of it (solved in topological order). Applied,
    it gives the network's *scale canonical form*: the same function, and the same weights whatever
    positive rescaling of its neurons it started from. Neurons with no incoming weight stay as they are."""
    factors: dict[int, np.ndarray] = {}
    for i in topological_order(len(graph.node_groups), graph.edge_blocks):
        g = graph.node_groups[i]
        if g.symmetry != "perm_scale":
            continue
        squares = np.zeros(g.size)
        for block in graph.edge_blocks:
            if block.dst != i or not block.tensor:
                continue
            w = graph.block_weights(block, np.float64)
            if block.src in factors:  # the source's outgoing weights were divided by its factors
                w = w / factors[block.src][None, :, None]
            squares += np.square(w).reshape(g.size, -1).sum(1)
        if g.bias:
            squares += np.square(np.asarray(graph.tensors[g.bias], dtype=np.float64))
        norm = np.sqrt(squares)
        factors[i] = np.where(norm > TINY, 1.0 / np.maximum(norm, TINY), 1.0)
    return GroupElement(factors=factors)


def _group_perm(graph: WeightGraph, element: GroupElement, index: int) -> np.ndarray:
    perm = element.perms.get(perm_key(graph, index))
    return np.arange(graph.node_groups[index].size) if perm is None else perm


def compose(graph: WeightGraph, first: GroupElement, second: GroupElement) -> GroupElement:
    """The element acting as ``first`` then ``second``: ``apply(apply(g, first), second)`` equals
    ``apply(g, compose(g, first, second))`` (``perm = perm1[perm2]``, ``q = q1[perm2] * q2``)."""
    perms = {}
    for key in set(first.perms) | set(second.perms):
        p1, p2 = first.perms.get(key), second.perms.get(key)
        perms[key] = p2 if p1 is None else p1 if p2 is None else p1[p2]
    factors = {}
    for i in set(first.factors) | set(second.factors):
        q1 = first.factors.get(i, np.ones(graph.node_groups[i].size))
        factors[i] = q1[_group_perm(graph, second, i)] * second.factors.get(i, 1.0)
    return GroupElement(perms, factors)


def inverse(graph: WeightGraph, element: GroupElement) -> GroupElement:
    """The element undoing ``element`` (``compose(g, element, inverse(g, element))`` is the identity)."""
    perms = {key: np.argsort(p) for key, p in element.perms.items()}
    factors = {i: 1.0 / q[np.argsort(_group_perm(graph, element, i))] for i, q in element.factors.items()}
    return GroupElement(perms, factors)


def is_identity(element: GroupElement, rtol: float = 0.0) -> bool:
    """Every permutation is the identity and every factor is 1 (within relative ``rtol``; signs exactly)."""
    return (all(np.array_equal(p, np.arange(len(p))) for p in element.perms.values())
            and all(np.all(q > 0) and np.all(np.abs(q - 1.0) <= rtol) for q in element.factors.values()))


def acted_axes(graph: WeightGraph) -> list[tuple[str, int, int, bool, tuple[int, ...]]]:
    """Every tensor axis the group acts on, as ``(tensor, axis, group, produces, view_shape)``: the axis
    is in the tensor's edge view of shape ``view_shape`` (``flatten`` weights seen as ``[dst, src, s]``);
    ``produces`` is true where the group's factor multiplies (incoming blocks, bias, normalization) and
    false where it divides (outgoing blocks). A tensor two blocks share (a decoder tied to an
    embedding table) is listed once per axis and permutation. :func:`apply` transforms these axes."""
    out, seen = [], set()

    def add(name: str, axis: int, i: int, produces: bool, shape: tuple[int, ...]) -> None:
        if (name, axis, perm_key(graph, i)) not in seen:
            seen.add((name, axis, perm_key(graph, i)))
            out.append((name, axis, i, produces, tuple(shape)))

    for i in symmetric_groups(graph):
        g = graph.node_groups[i]
        for name in (g.bias, *g.norm):
            if name:
                add(name, 0, i, True, graph.tensors[name].shape)
        for block in graph.edge_blocks:
            if not block.tensor or i not in (block.src, block.dst):
                continue
            dst_axis, src_axis = _axes(graph, block)
            shape = _edge_view(graph, block, graph.tensors[block.tensor]).shape
            if block.dst == i:
                add(block.tensor, dst_axis, i, True, shape)
            if block.src == i and block.kind not in GROUPED_EDGES:  # moved with the destination's groups
                add(block.tensor, src_axis, i, False, shape)
    return out
