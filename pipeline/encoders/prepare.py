"""A :class:`~pipeline.graph.schema.WeightGraph` -> the encoders' :class:`GraphInput`: its blocks as
torch tensors in edge view, the network's outputs at the probe inputs (:mod:`.executor`), and its
weight statistics (:mod:`.statistics`)."""
from __future__ import annotations

import numpy as np
import torch

from pipeline.checkpoint.dtypes import BF16
from pipeline.encoders.executor import ACTIVATIONS, probe_outputs, probe_values
from pipeline.encoders.graph_input import Block, GraphInput, Group, stack, stacks
from pipeline.encoders.probes import ProbeInputs
from pipeline.encoders.statistics import weight_statistics
from pipeline.graph.schema import FIXED_EDGES, GROUPED_EDGES, NODE_KINDS, WeightGraph, repeat_sources, topological_order
from pipeline.symmetry import GroupElement, canonical_scaling


def _as_tensor(array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    array = np.asarray(array, dtype=np.float32)
    return torch.from_numpy(array if array.flags.writeable else array.copy()).to(dtype)


def _weights(array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """A block's weights: kept at 16 bits where stored so (consumers cast them as they use them, so
    a billion-parameter model is not held twice), else as :func:`_as_tensor`."""
    if array.dtype == BF16:
        return torch.from_numpy(np.array(array).view(np.int16)).view(torch.bfloat16)
    if array.dtype == np.float16:
        return torch.from_numpy(np.array(array))
    return _as_tensor(array, dtype)


def graph_input(graph: WeightGraph, dtype: torch.dtype = torch.float32) -> GraphInput:
    """The graph's structure and weights as torch tensors (copied once: to ``dtype``, or at 16 bits
    where stored so, see :func:`_weights`), without probe outputs or statistics."""
    max_layer = max((g.layer for g in graph.node_groups), default=0) or 1
    groups = []
    for i, g in enumerate(graph.node_groups):
        norm = None
        if g.norm:
            norm = torch.zeros(g.size, 4, dtype=dtype)
            for j, name in enumerate(g.norm):
                norm[:, j] = _as_tensor(graph.tensors[name], dtype)
        groups.append(Group(i, g.size, NODE_KINDS.index(g.kind), g.symmetry, g.layer / max_layer,
                            _as_tensor(graph.tensors[g.bias], dtype) if g.bias else None, norm, g.heads))
    blocks = []
    for b in graph.edge_blocks:
        weight = None if b.kind in FIXED_EDGES else _weights(graph.block_weights(b), dtype)
        kernel = tuple(graph.tensors[b.tensor].shape[2:]) if b.kind in ("linear", *GROUPED_EDGES) else ()
        sources = None if b.kind != "repeat" else torch.from_numpy(repeat_sources(
            graph.node_groups[b.src].size, graph.node_groups[b.src].heads, graph.node_groups[b.dst].heads))
        blocks.append(Block(b.src, b.dst, b.kind, weight, kernel, sources))
    return GraphInput(groups, blocks, topological_order(len(groups), blocks), graph.family, graph.mode,
                      graph.activation, graph.num_params, attention=attention_pairs(graph), gates=gate_pairs(graph))


def gate_pairs(graph: WeightGraph) -> list[tuple[int, int]]:
    """``(gate group, value group)`` of each gated unit layer (LLaMA's ``gate_proj`` and
    ``up_proj``, T5's ``wi_0`` and ``wi_1``): a hidden group no block reads, and the hidden group
    that shares its permutation and is read."""
    read = {b.src for b in graph.edge_blocks}
    values = {g.perm_group: i for i, g in enumerate(graph.node_groups) if g.kind == "hidden" and g.perm_group and i in read}
    return [(i, values[g.perm_group]) for i, g in enumerate(graph.node_groups)
            if g.kind == "hidden" and i not in read and g.perm_group in values]


def attention_pairs(graph: WeightGraph) -> list[tuple[int, int, int | None]]:
    """``(query group, key group, position group)`` of each attention layer: the query and key
    groups of one head group that share their units' permutation (``perm_group``), and the head
    group's one-unit-per-head key group (a relative position bias, T5's), if any."""
    keys, positions = {}, {}
    for i, g in enumerate(graph.node_groups):
        if g.kind == "key" and g.head_group:
            if g.size == g.heads:
                positions[g.head_group] = i
            else:
                keys[g.head_group, g.perm_group] = i
    return [(i, keys[g.head_group, g.perm_group], positions.get(g.head_group)) for i, g in enumerate(graph.node_groups)
            if g.kind == "query" and (g.head_group, g.perm_group) in keys]


def prepare(graph: WeightGraph, dtype: torch.dtype = torch.float32, scaling: GroupElement | None = None,
            probes: ProbeInputs | None = None, activations: dict = ACTIVATIONS) -> GraphInput:
    """:func:`graph_input` with the network's outputs at the probe inputs and its weight statistics.
    ``scaling``: the graph's :func:`~pipeline.symmetry.canonical_scaling` when the caller has it
    already; ``probes``: the encoder's own probe inputs
    (:func:`~pipeline.encoders.probes.probe_inputs_of`), else the defaults; ``activations``: what
    the probe pass may run (see :func:`~pipeline.encoders.executor.probe_values`)."""
    return prepare_many([graph], dtype, None if scaling is None else [scaling], probes, activations)[0]


def prepare_many(graphs: list[WeightGraph], dtype: torch.dtype = torch.float32,
                 scalings: list[GroupElement] | None = None, probes: ProbeInputs | None = None,
                 activations: dict = ACTIVATIONS) -> list[GraphInput]:
    """:func:`prepare` of each graph (``scalings``: theirs, when the caller has them): models of one
    architecture run the probe pass and their statistics as one stack (:func:`~.graph_input.stacks`),
    in the encoder's dtype (float32 convolutions are 5x faster than float64 ones)."""
    prepared = [graph_input(g, dtype) for g in graphs]
    scalings = [canonical_scaling(g) for g in graphs] if scalings is None else scalings
    for chunk in stacks(prepared):
        batch = stack([prepared[i] for i in chunk])
        factors = {k: torch.from_numpy(np.stack([np.asarray(scalings[i].factors[k], dtype=np.float64) for i in chunk]))
                   for k in scalings[chunk[0]].factors}
        values = probe_values(batch, probes, activations, dtype)
        outputs, statistics = probe_outputs(batch, values), weight_statistics(batch, factors, values)
        for j, i in enumerate(chunk):  # copies: a model's tensors must not hold the chunk's alive
            prepared[i].outputs_at_probes = None if outputs is None else outputs[j].to(dtype, copy=True)
            prepared[i].statistics = None if statistics is None else statistics[j].to(dtype, copy=True)
    return prepared
