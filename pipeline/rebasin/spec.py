"""The permutation spec of a weight graph: for every permutation, the tensor axes it acts on.

Derived from the graph's symmetry annotations through :func:`pipeline.symmetry.acted_axes`, so it is
exactly the action :func:`pipeline.symmetry.apply` performs: one permutation per
:func:`~pipeline.symmetry.perm_key` (a residual stream's groups, a layer with its normalization, the
query and key units of one attention layer share theirs), acting on the destination axis of every
incoming block, on biases and normalization parameters, and on the source axis of every outgoing
block. Permutations of groups with ``heads > 1`` are built from one whole-head permutation per
``head_group`` and within-head permutations; the keys of one head group form one descent *unit*
(under grouped-query attention, keys of ``h_kv`` and of ``h_q`` heads).
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.graph.schema import WeightGraph
from pipeline.symmetry import acted_axes, perm_key


@dataclass(frozen=True)
class Axis:
    """Axis ``axis`` of tensor ``tensor`` (in its edge view) holds the nodes of group ``group``;
    ``produces``: the group's factor multiplies there (else it divides)."""
    tensor: str
    axis: int
    group: int
    produces: bool


@dataclass(frozen=True)
class Perm:
    """One permutation: ``size`` nodes in ``heads`` equal heads, shared by ``groups`` (the first at
    ``depth``). Heads: the groups' ``perm_group`` (keys of one head group and ``perm_group`` share
    their within-head permutations, by key/value head) and whether units are ``fixed`` within a head
    (rotary position embeddings)."""
    key: str
    size: int
    depth: int
    heads: int
    head_group: str
    groups: tuple[int, ...]
    axes: tuple[Axis, ...]
    perm_group: str = ""
    fixed: bool = False


@dataclass(frozen=True)
class PermutationSpec:
    perms: dict[str, Perm]
    tensor_axes: dict[str, tuple[Axis, ...]]   # tensor -> the axes permutations act on
    views: dict[str, tuple[int, ...]]          # tensor -> edge-view shape
    key_of: dict[int, str]                     # node group -> permutation key
    symmetry: dict[int, str]                   # node group -> perm | perm_scale | perm_sign
    units: tuple[tuple[str, ...], ...]         # descent units (one key, or a head group's), by depth


def permutation_spec(graph: WeightGraph) -> PermutationSpec:
    """The spec of ``graph``. Raises ``ValueError`` where head annotations disagree within a key or
    a head group.
    One permutation may act on two axes of a tensor (a masked-LM transform between two groups of
    the residual stream): there ``J`` is quadratic in it, and the descent solves it linearized, each
    axis against the other at its current permutation, keeping an update only if ``J`` rises."""
    axes: dict[str, list[Axis]] = {}
    by_tensor: dict[str, list[Axis]] = {}
    views: dict[str, tuple[int, ...]] = {}
    key_of: dict[int, str] = {}
    for tensor, axis, group, produces, shape in acted_axes(graph):
        key = key_of.setdefault(group, perm_key(graph, group))
        ax = Axis(tensor, axis, group, produces)
        axes.setdefault(key, []).append(ax)
        by_tensor.setdefault(tensor, []).append(ax)
        views[tensor] = tuple(shape)
    perms, heads_of = {}, {}
    for key, members in axes.items():
        groups = tuple(sorted({a.group for a in members}))
        shapes = {(graph.node_groups[i].size, graph.node_groups[i].heads, graph.node_groups[i].head_group,
                   graph.node_groups[i].head_dims) for i in groups}
        if len(shapes) != 1:
            raise ValueError(f"permutation {key!r}: groups disagree on size or heads: {shapes}")
        size, heads, head_group, head_dims = shapes.pop()
        depth = min(graph.node_groups[i].layer for i in groups)
        perms[key] = Perm(key, size, depth, heads, head_group if heads > 1 else "", groups, tuple(members),
                          graph.node_groups[groups[0]].perm_group, heads > 1 and head_dims == "fixed")
        if heads > 1:
            heads_of.setdefault(head_group, []).append(key)
    units = [(key,) for key, p in perms.items() if p.heads == 1] + [tuple(keys) for keys in heads_of.values()]
    units.sort(key=lambda unit: min(perms[k].depth for k in unit))
    for keys in heads_of.values():
        counts = sorted({perms[k].heads for k in keys})
        if len(counts) > 2 or counts[-1] % counts[0]:
            raise ValueError(f"head group of {keys}: heads {counts} are not query heads sharing key/value heads")
    return PermutationSpec(perms, {t: tuple(a) for t, a in by_tensor.items()}, views, key_of,
                           {i: graph.node_groups[i].symmetry for i in key_of}, tuple(units))


def same_architecture(graph_a: WeightGraph, graph_b: WeightGraph) -> bool:
    """Two graphs with the same structure and tensor shapes (so one's spec serves both)."""
    return (graph_a.node_groups == graph_b.node_groups and graph_a.edge_blocks == graph_b.edge_blocks
            and {n: t.shape for n, t in graph_a.tensors.items()} == {n: t.shape for n, t in graph_b.tensors.items()})
