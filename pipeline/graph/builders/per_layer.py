"""The per-layer fallback: one bipartite graph per tensor, needing no wiring knowledge (the graph of
"Permutation-Equivariant Contrastive Embeddings for Model Zoo Retrieval", ``shared/seeds/000``).

A tensor of shape ``[out, in, *k]`` becomes ``in`` source and ``out`` target nodes joined by a
``linear`` edge block (edge features of length ``prod(k)``); a 1-D tensor ``[n]`` is ``1 -> n``,
a scalar ``1 -> 1``. Integer buffers are stored but not graphed. Nodes are not shared between
tensors, so no symmetry is claimed (``none``).
"""
from __future__ import annotations

from pipeline.checkpoint.dtypes import is_float
from pipeline.graph.builders.common import GraphAssembler


def build_per_layer(tensors, names: list[str]) -> GraphAssembler:
    asm = GraphAssembler(tensors)
    for layer, name in enumerate(n for n in names if is_float(tensors[n].dtype)):
        shape = tensors[name].shape
        out_size = shape[0] if shape else 1
        in_size = shape[1] if len(shape) >= 2 else 1
        src = asm.group(f"{name}:in", in_size, "tensor_in", layer)
        dst = asm.group(f"{name}:out", out_size, "tensor_out", layer)
        asm.edge(src, dst, "linear", name)
    return asm
