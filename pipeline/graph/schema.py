"""The weight-graph format: the single definition of what a graph of a network is.

A network is a graph whose nodes are neurons (channels for convolutions) and whose edges are weights.
Dense layers make dense blocks of edges, so a graph is stored **by blocks**, never per edge:

* :class:`NodeGroup` -- a layer's worth of nodes (``size`` of them) with their role (``kind``), depth
  (``layer``), which symmetries act on them, and the tensors that are their node features
  (``bias``, normalization ``norm`` parameters).
* :class:`EdgeBlock` -- all edges from one group to another, with the tensor that holds their
  features. The block's ``kind`` says how that tensor maps onto edges, so edge indices are implied by
  shapes (see :meth:`WeightGraph.block_edges`):

  ==============  =====================  ====================================================
  kind            tensor shape           edge ``src i -> dst j`` feature vector
  ==============  =====================  ====================================================
  ``linear``      ``[dst, src, *k]``     ``W[j, i].reshape(-1)`` (length ``prod(k)``: a conv
                                         kernel is one edge, a linear layer is a 1x1 kernel)
  ``flatten``     ``[dst, src * s]``     ``W[j, i*s:(i+1)*s]`` (a dense layer over flattened
                                         conv feature maps: one edge per channel, ``s`` values)
  ``embedding``   ``[src, dst]``         ``W[i, j]`` (token/position embeddings)
  ``depthwise``   ``[n, 1, *k]``         ``W[i, 0].reshape(-1)`` on ``i -> i`` only (a depthwise
                                         convolution: each channel filtered by its own kernel;
                                         ``src`` and ``dst`` have ``n`` nodes and share their
                                         permutation, and ``src`` has no scale or sign symmetry,
                                         whose factor would act on the same axis)
  ``grouped``     ``[dst, src/g, *k]``   ``W[j, i].reshape(-1)`` on ``(j // (dst/g)) (src/g) + i
                                         -> j`` (a convolution in ``g`` channel groups: both
                                         groups have ``heads = g`` in one ``head_group``, whole
                                         groups permute together; ``src`` has ``head_dims``
                                         ``fixed``, its channels staying in place within a group)
  ``residual``    none                   ``1`` on ``i -> i`` only (a skip connection)
  ``gate``        none                   ``1`` on ``i -> i`` only, multiplying: the destination's
                                         value is the sum of its other incoming messages times
                                         the gates' (squeeze-and-excitation)
  ``repeat``      none                   ``1`` from each unit of a key/value head to the same
                                         unit of every query head it serves (grouped-query
                                         attention: ``src`` has ``heads = h_kv``, ``dst``
                                         ``h_q``, and each source head feeds ``h_q / h_kv``
                                         consecutive destination heads; see
                                         :func:`repeat_sources`)
  ==============  =====================  ====================================================

Edge features derived from the tensor (by readers, not stored): the value ``w``, the relative
magnitude ``|w| / ||W||_F`` and the kernel position (index into the feature vector).

Symmetries (per node group, ``symmetry``): what can be done to the group's nodes without changing
the network's function, given the consumer layers are transformed to compensate:

* ``none`` -- input/output neurons, or nodes whose wiring we do not know (per-layer mode).
* ``perm`` -- permutation (any elementwise activation, e.g. GELU; normalized units; residual streams).
* ``perm_scale`` -- permutation and positive per-neuron scaling ``q > 0`` (ReLU family: incoming
  weights and bias times ``q``, outgoing weights times ``1/q``).
* ``perm_sign`` -- permutation and sign flips ``q = +-1`` (odd activations: tanh, sine).

Groups with the same non-empty ``perm_group`` must be permuted together (the residual stream of a
ResNet or transformer; the query and key units of one attention layer). Groups with ``heads > 1``
are split into ``heads`` equal contiguous heads: permutations act within each head (unless
``head_dims`` is ``fixed``: rotary position embeddings pair fixed dimensions of a head), and heads
are permuted whole, by one head permutation shared by every group with the same ``head_group``.
Where the groups of a head group have different head counts (grouped-query attention: ``h_q``
query heads, ``h_kv`` key/value heads), the permutation of the ``h_kv`` heads moves each key/value
head with the ``h_q / h_kv`` query heads it serves, which may also be permuted among themselves.

Graph modes: ``computational`` (the network's real wiring, one connected graph) and ``per_layer``
(the fallback: one bipartite graph per tensor, nodes not shared, needs no wiring knowledge).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pyarrow as pa

NODE_KINDS = ("input", "hidden", "output", "stream", "query", "key", "value", "tensor_in", "tensor_out")
EDGE_KINDS = ("linear", "flatten", "embedding", "depthwise", "grouped", "residual", "gate", "repeat")
#: edge kinds whose source axis holds a channel group's units (``[dst, src/g, F]``; ``g = src`` for
#: ``depthwise``): a destination reads only its own group
GROUPED_EDGES = ("depthwise", "grouped")
#: edge kinds that carry no tensor
FIXED_EDGES = ("residual", "gate", "repeat")
SYMMETRIES = ("none", "perm", "perm_scale", "perm_sign")


class NodeGroup(NamedTuple):
    """A layer's worth of nodes; see the module docstring for the fields' meaning."""
    name: str
    size: int
    kind: str
    layer: int
    symmetry: str = "none"
    perm_group: str = ""
    heads: int = 1
    head_group: str = ""
    bias: str = ""
    norm: tuple[str, ...] = ()
    head_dims: str = "perm"   # perm | fixed: whether units permute within a head

    def validate(self) -> "NodeGroup":
        if self.kind not in NODE_KINDS or self.symmetry not in SYMMETRIES:
            raise ValueError(f"bad node group {self}")
        if self.size <= 0 or self.size % self.heads:
            raise ValueError(f"node group {self.name!r}: size {self.size} with {self.heads} heads")
        if self.head_dims not in ("perm", "fixed"):
            raise ValueError(f"node group {self.name!r}: head_dims {self.head_dims!r}")
        return self


class EdgeBlock(NamedTuple):
    """All edges from group ``src`` to group ``dst`` (indices into the node groups)."""
    name: str
    src: int
    dst: int
    kind: str
    tensor: str = ""

    def validate(self) -> "EdgeBlock":
        if self.kind not in EDGE_KINDS:
            raise ValueError(f"bad edge block {self}")
        return self


@dataclass
class WeightGraph:
    """A model as a weight graph plus all of its tensors (also those no block uses, e.g. buffers).

    ``tensors`` maps name -> numpy array at the stored precision; the graph references them by name.
    ``info`` carries the row's descriptive fields (content_id, source_path, family, ...).
    """
    node_groups: list[NodeGroup]
    edge_blocks: list[EdgeBlock]
    tensors: dict[str, np.ndarray]
    family: str = "unknown"
    mode: str = "per_layer"
    activation: str = "unknown"
    info: dict = field(default_factory=dict)

    def with_tensors(self, tensors: dict[str, np.ndarray]) -> "WeightGraph":
        """The same graph over other tensors (e.g. a transformed state dict)."""
        return dataclasses.replace(self, tensors=tensors)

    @property
    def node_offsets(self) -> np.ndarray:
        """``[len(node_groups) + 1]`` start index of each group in the global node numbering."""
        return np.concatenate([[0], np.cumsum([g.size for g in self.node_groups])]).astype(np.int64)

    @property
    def num_params(self) -> int:
        return sum(int(t.size) for t in self.tensors.values())

    @property
    def num_nodes(self) -> int:
        return int(sum(g.size for g in self.node_groups))

    def block_shape(self, block: EdgeBlock) -> tuple[int, int, int]:
        """``(num_dst, num_src, feature_len)`` of a block's edge view (grouped and depthwise blocks':
        ``(dst, src/g, feature_len)``, the sources each destination reads)."""
        src, dst = self.node_groups[block.src].size, self.node_groups[block.dst].size
        if block.kind in FIXED_EDGES:
            return dst, src, 1
        if block.kind in GROUPED_EDGES:
            src = self.tensors[block.tensor].shape[1]
        size = self.tensors[block.tensor].size
        return dst, src, size // (dst * src)

    def block_weights(self, block: EdgeBlock, dtype=None) -> np.ndarray:
        """A block's tensor in edge view ``[dst, src, F]`` (see :meth:`block_shape`; embedding tables
        transposed), as ``dtype`` (default: the stored one)."""
        dst, src, feat = self.block_shape(block)
        w = np.asarray(self.tensors[block.tensor], dtype=dtype)
        return (w.T if block.kind == "embedding" else w).reshape(dst, src, feat)

    def block_num_edges(self, block: EdgeBlock) -> int:
        dst_n, src_n, _ = self.block_shape(block)
        return dst_n if block.kind in FIXED_EDGES else dst_n * src_n

    @property
    def num_edges(self) -> int:
        return sum(self.block_num_edges(b) for b in self.edge_blocks)

    def block_edges(self, block: EdgeBlock) -> tuple[np.ndarray, np.ndarray]:
        """A block's edges, vectorized: ``edge_index [2, E]`` (global node ids, src then dst) and
        ``features [E, F]`` float32 (raw weight values; ``F`` the kernel length). Order: dst-major."""
        offsets = self.node_offsets
        s0, d0 = offsets[block.src], offsets[block.dst]
        dst_n, src_n, feat = self.block_shape(block)
        if block.kind in FIXED_EDGES:
            ids = np.arange(dst_n, dtype=np.int64)
            sources = ids if block.kind != "repeat" else repeat_sources(
                src_n, self.node_groups[block.src].heads, self.node_groups[block.dst].heads)
            return np.stack([s0 + sources, d0 + ids]), np.ones((dst_n, 1), np.float32)
        feats = self.block_weights(block, np.float32).reshape(dst_n * src_n, feat)
        dst = np.repeat(np.arange(dst_n, dtype=np.int64), src_n)
        src = np.tile(np.arange(src_n, dtype=np.int64), dst_n)
        if block.kind in GROUPED_EDGES:  # destination j reads its group's sources
            groups = self.node_groups[block.src].size // src_n
            src = src + (dst // (dst_n // groups)) * src_n
        return np.stack([s0 + src, d0 + dst]), feats


def repeat_sources(src_size: int, src_heads: int, dst_heads: int) -> np.ndarray:
    """``[src_size * dst_heads / src_heads]``: the source unit of each destination unit of a
    ``repeat`` block (destination unit ``(j r + t) d + i`` reads source unit ``j d + i``, ``d`` the
    head width, ``r = dst_heads / src_heads``)."""
    if dst_heads % src_heads:
        raise ValueError(f"{dst_heads} query heads cannot share {src_heads} key/value heads")
    d, r = src_size // src_heads, dst_heads // src_heads
    return np.arange(src_size).reshape(src_heads, 1, d).repeat(r, axis=1).reshape(-1)


def topological_order(n: int, blocks) -> list[int]:
    """A topological order of ``n`` node groups (sources first) under edge ``blocks`` (anything with
    ``src`` and ``dst``); raises ``ValueError`` on a cycle."""
    indegree = [0] * n
    for b in blocks:
        indegree[b.dst] += 1
    ready = [i for i in range(n) if indegree[i] == 0]
    order = []
    while ready:
        i = ready.pop(0)
        order.append(i)
        for b in blocks:
            if b.src == i:
                indegree[b.dst] -= 1
                if indegree[b.dst] == 0:
                    ready.append(b.dst)
    if len(order) != n:
        raise ValueError("weight graph has a cycle")
    return order


# --- Arrow/Parquet layout ------------------------------------------------------------------------
#
# A shard is a pair of Parquet files written together:
#   <part>.graphs.parquet   one row per model (GRAPH_SCHEMA): description, structure, tensor specs;
#   <part>.weights.parquet  the weights (WEIGHT_SCHEMA): each tensor's bytes (C order, stored dtype)
#                           as one or more consecutive rows of at most a few MiB, tensors in the order
#                           of the graph rows and of each row's ``tensors`` list.
# Small rows keep the Parquet writer's buffers small (a nested list of a model's tensors would be
# buffered whole), so models of any size stream through bounded memory, and no value nears Parquet's
# 2 GiB limit.

NODE_GROUP_TYPE = pa.struct([
    ("name", pa.string()), ("size", pa.int64()), ("kind", pa.string()), ("layer", pa.int32()),
    ("symmetry", pa.string()), ("perm_group", pa.string()), ("heads", pa.int32()),
    ("head_group", pa.string()), ("bias", pa.string()), ("norm", pa.list_(pa.string())),
    ("head_dims", pa.string()),
])
EDGE_BLOCK_TYPE = pa.struct([
    ("name", pa.string()), ("src", pa.int32()), ("dst", pa.int32()), ("kind", pa.string()),
    ("tensor", pa.string()),
])
TENSOR_TYPE = pa.struct([("name", pa.string()), ("dtype", pa.string()), ("shape", pa.list_(pa.int64()))])

#: Descriptive columns of a graph row.
INFO_FIELDS = [
    pa.field("content_id", pa.string(), nullable=False),
    pa.field("source_path", pa.string()),
    pa.field("source_layout", pa.string()),
    pa.field("family", pa.string()),
    pa.field("graph_mode", pa.string()),
    pa.field("activation", pa.string()),
    pa.field("num_params", pa.int64()),
    pa.field("source_dtype", pa.string()),
    pa.field("stored_dtype", pa.string()),
]
GRAPH_SCHEMA = pa.schema(INFO_FIELDS + [
    pa.field("metadata", pa.string()),            # JSON: safetensors __metadata__ and config.json
    pa.field("node_groups", pa.list_(NODE_GROUP_TYPE)),
    pa.field("edge_blocks", pa.list_(EDGE_BLOCK_TYPE)),
    pa.field("tensors", pa.list_(TENSOR_TYPE)),   # every tensor of the state dict, in order
])
WEIGHT_SCHEMA = pa.schema([
    pa.field("content_id", pa.string(), nullable=False),
    pa.field("index", pa.int32(), nullable=False),  # position in the graph row's ``tensors``
    pa.field("data", pa.binary(), nullable=False),  # a piece of the tensor's bytes
])


def node_group_from_record(record: dict) -> NodeGroup:
    return NodeGroup(**{**record, "norm": tuple(record["norm"] or ()), "head_dims": record.get("head_dims") or "perm"})


def metadata_json(metadata: dict, config: dict | None) -> str:
    return json.dumps({"metadata": metadata, "config": config}, sort_keys=True, separators=(",", ":"))
