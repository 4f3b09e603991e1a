"""The encoders' input: one model's weight graph as torch tensors, ready for message passing.

Data containers only (built by :func:`pipeline.encoders.prepare.prepare`). Every edge block holds its
weights in *edge view* ``[dst, src, F]`` (``F`` features per edge: the kernel of a convolution, the
spatial positions of a ``flatten`` block, 1 for dense layers; embedding tables transposed to
``[dst, src]``; residual blocks carry no tensor). No per-edge objects exist: edge indices stay
implied by the shapes, and messages are matrix products over these blocks.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

#: models of one architecture are stacked (:func:`stacks`) up to this many weights at a time
STACKED_PARAMS = 1 << 24


@dataclass
class Group:
    """A node group: ``kind`` indexes ``pipeline.graph.schema.NODE_KINDS``; ``depth`` is its layer
    over the deepest layer, in ``[0, 1]``."""
    index: int
    size: int
    kind: int
    symmetry: str
    depth: float
    bias: torch.Tensor | None       # [size]
    norm: torch.Tensor | None       # [size, 4] (gamma, beta, mean, var; missing ones zero)
    heads: int = 1


@dataclass
class Block:
    """An edge block from group ``src`` to group ``dst``."""
    src: int
    dst: int
    kind: str
    weight: torch.Tensor | None     # [dst, src, F] edge view, None for residual and repeat blocks
    kernel: tuple[int, ...] = ()    # a convolution's kernel shape (F = its product); () otherwise
    sources: torch.Tensor | None = None  # a repeat block's source unit of each destination unit


@dataclass
class GraphInput:
    """One model, prepared, or with ``count`` set, that many models of one structure (:func:`stack`:
    every tensor but ``sources`` has a leading model dimension). ``order`` is a topological order of
    the groups (sources first); ``activation`` the network's elementwise activation (``unknown`` if
    not recorded)."""
    groups: list[Group]
    blocks: list[Block]
    order: list[int]
    family: str
    mode: str
    activation: str
    num_params: int
    #: ``(query group, key group, position group or None)`` of every attention layer (see
    #: :func:`pipeline.encoders.prepare.attention_pairs`)
    attention: list[tuple[int, int, int | None]] = field(default_factory=list)
    #: ``(gate group, value group)`` of every gated unit layer (see :func:`pipeline.encoders.prepare.gate_pairs`)
    gates: list[tuple[int, int]] = field(default_factory=list)
    outputs_at_probes: torch.Tensor | None = None  # [n_out, NUM_PROBES], see pipeline.encoders.executor
    statistics: torch.Tensor | None = None  # [weighted blocks, NUM_STATISTICS], see pipeline.encoders.statistics
    count: int | None = None  # models stacked (see stack); None: one model, no model dimension

    def to(self, device) -> "GraphInput":
        """A copy with every tensor on ``device``."""
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return replace(self, groups=[replace(g, bias=move(g.bias), norm=move(g.norm)) for g in self.groups],
                       blocks=[replace(b, weight=move(b.weight), sources=move(b.sources)) for b in self.blocks],
                       outputs_at_probes=move(self.outputs_at_probes), statistics=move(self.statistics))


def structure(graph: GraphInput) -> tuple:
    """What models must share to be stacked into one input (:func:`stack`): their groups, blocks,
    order, and the shapes and dtypes of every tensor (the same architecture, prepared alike)."""
    shape = lambda t: None if t is None else (tuple(t.shape), t.dtype)  # noqa: E731
    return (tuple((g.size, g.kind, g.symmetry, g.depth, g.heads, shape(g.bias), shape(g.norm)) for g in graph.groups),
            tuple((b.src, b.dst, b.kind, shape(b.weight), b.kernel,
                   None if b.sources is None else b.sources.cpu().numpy().tobytes()) for b in graph.blocks),
            tuple(graph.order), shape(graph.outputs_at_probes), shape(graph.statistics))


def stack(graphs: list[GraphInput]) -> GraphInput:
    """Models of one :func:`structure` as one input with ``count = len(graphs)``: each tensor
    ``[...]`` becomes ``[count, ...]`` (a view for a single model), as PyTorch Geometric batches graphs
    into one, here with the batch as a tensor dimension since the graphs are alike."""
    first = graphs[0]

    def stacked(get):
        tensors = [get(g) for g in graphs]
        if tensors[0] is None:
            return None
        return tensors[0].unsqueeze(0) if len(tensors) == 1 else torch.stack(tensors)

    groups = [replace(group, bias=stacked(lambda g, i=i: g.groups[i].bias), norm=stacked(lambda g, i=i: g.groups[i].norm))
              for i, group in enumerate(first.groups)]
    blocks = [replace(block, weight=stacked(lambda g, k=k: g.blocks[k].weight)) for k, block in enumerate(first.blocks)]
    return replace(first, groups=groups, blocks=blocks, outputs_at_probes=stacked(lambda g: g.outputs_at_probes),
                   statistics=stacked(lambda g: g.statistics), count=len(graphs))


def stacks(graphs: list[GraphInput]) -> list[list[int]]:
    """The positions of ``graphs`` grouped by :func:`structure`, in chunks of at most
    :data:`STACKED_PARAMS` weights (one model at least): what to :func:`stack` together."""
    by_structure: dict[tuple, list[int]] = {}
    for i, graph in enumerate(graphs):
        by_structure.setdefault(structure(graph), []).append(i)
    chunks = []
    for members in by_structure.values():
        step = max(1, STACKED_PARAMS // max(1, graphs[members[0]].num_params))
        chunks += [members[start:start + step] for start in range(0, len(members), step)]
    return chunks
