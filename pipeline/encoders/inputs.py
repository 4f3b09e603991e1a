"""Data side of the encoders: a :class:`WeightGraph` as torch tensors, ready for message passing.

Every edge block becomes its weights in *edge view* ``[dst, src, F]`` (``F`` features per edge: the
kernel of a conv, the spatial positions of a ``flatten`` block, 1 for dense layers; embeddings are
transposed to ``[dst, src]``; residual blocks carry no tensor). No per-edge objects are built: edge
indices stay implied by the shapes, and messages are matrix products over these blocks.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipeline.encoders.probes import ProbeInputs, probe_outputs, probe_values
from pipeline.encoders.statistics import weight_statistics
from pipeline.graph.schema import NODE_KINDS, SYMMETRIES, WeightGraph, topological_order
from pipeline.symmetry import GroupElement, canonical_scaling


@dataclass
class Group:
    index: int
    size: int
    kind: int          # index into NODE_KINDS
    symmetry: str
    depth: float       # layer / max layer, in [0, 1]
    bias: torch.Tensor | None       # [size]
    norm: torch.Tensor | None       # [size, 4] (gamma, beta, mean, var; missing ones zero)


@dataclass
class Block:
    src: int
    dst: int
    kind: str
    weight: torch.Tensor | None     # [dst, src, F] edge view, None for residual
    kernel: tuple[int, ...] = ()    # a convolution's kernel shape (F = its product); () otherwise


@dataclass
class GraphInput:
    """One model, prepared. ``order`` is a topological order of the groups (sources first)."""
    groups: list[Group]
    blocks: list[Block]
    order: list[int]
    family: str
    mode: str
    num_params: int
    outputs_at_probes: torch.Tensor | None = None  # [n_out, NUM_PROBES], see :mod:`.probes`
    statistics: torch.Tensor | None = None  # [weighted blocks, NUM_STATISTICS], see :mod:`.statistics`

    def to(self, device) -> "GraphInput":
        """A copy with every tensor on ``device``."""
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        groups = [Group(g.index, g.size, g.kind, g.symmetry, g.depth, move(g.bias), move(g.norm)) for g in self.groups]
        blocks = [Block(b.src, b.dst, b.kind, move(b.weight), b.kernel) for b in self.blocks]
        return GraphInput(groups, blocks, self.order, self.family, self.mode, self.num_params,
                          move(self.outputs_at_probes), move(self.statistics))


def _f32(array: np.ndarray) -> torch.Tensor:
    array = np.asarray(array, dtype=np.float32)
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def prepare(graph: WeightGraph, dtype: torch.dtype = torch.float32, scaling: GroupElement | None = None,
            probes: ProbeInputs | None = None) -> GraphInput:
    """Torch view of a graph (copies weights once, to ``dtype``). ``scaling``: the graph's
    :func:`~pipeline.symmetry.canonical_scaling` when the caller has it already; ``probes``: the
    encoder's own probe inputs (:func:`~pipeline.encoders.probes.probe_inputs_of`), else the defaults."""
    max_layer = max((g.layer for g in graph.node_groups), default=0) or 1
    groups = []
    for i, g in enumerate(graph.node_groups):
        norm = None
        if g.norm:
            norm = torch.zeros(g.size, 4, dtype=dtype)
            for j, name in enumerate(g.norm):
                norm[:, j] = _f32(graph.tensors[name]).to(dtype)
        groups.append(Group(i, g.size, NODE_KINDS.index(g.kind), g.symmetry, g.layer / max_layer,
                            _f32(graph.tensors[g.bias]).to(dtype) if g.bias else None, norm))
    blocks = []
    for b in graph.edge_blocks:
        weight, kernel = None, ()
        if b.kind != "residual":
            weight = _f32(graph.block_weights(b)).to(dtype)
        if b.kind == "linear":
            kernel = tuple(graph.tensors[b.tensor].shape[2:])
        blocks.append(Block(b.src, b.dst, b.kind, weight, kernel))
    order = topological_order(len(groups), blocks)
    values = probe_values(groups, blocks, order, graph.activation, probes)
    outputs = probe_outputs(groups, values)
    statistics = weight_statistics(blocks, groups, (canonical_scaling(graph) if scaling is None else scaling).factors, values)
    cast = lambda t: None if t is None else t.to(dtype)  # noqa: E731
    return GraphInput(groups, blocks, order, graph.family, graph.mode, graph.num_params, cast(outputs),
                      cast(statistics))


SYMMETRY_INDEX = {s: i for i, s in enumerate(SYMMETRIES)}


def positional_features(count: int, dim: int, dtype=torch.float32) -> torch.Tensor:
    """``[count, dim]`` sinusoidal features of node indices: input and output neurons are not
    interchangeable, so encoders see which one is which."""
    position = torch.arange(count, dtype=torch.float64)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float64) * (-np.log(10000.0) / dim))
    out = torch.zeros(count, dim, dtype=torch.float64)
    out[:, 0::2] = torch.sin(position * freq)
    out[:, 1::2] = torch.cos(position * freq[: dim // 2])
    return out.to(dtype)
