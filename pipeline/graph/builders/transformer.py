"""BERT-style transformer encoders (Hugging Face parameter names, optional ``bert.`` prefix).

Graph: token/position/type input nodes feed the embedding stream through ``embedding`` edge blocks.
Per encoder layer: the stream feeds query, key and value groups (``heads`` heads each); values feed
the attention output through ``attention.output.dense``, plus a residual edge block from the
layer's input stream; then the FFN's intermediate group and the layer's output stream (residual from
the attention output). LayerNorm parameters are node features of the stream group they normalize.
Every stream group shares the permutation ``stream``; query and key units share a within-head
permutation, and q/k/v share the layer's head permutation. An optional pooler (tanh) and classifier
close the graph.
"""
from __future__ import annotations

import re

from pipeline.graph.builders.common import GraphAssembler, hidden_symmetry

_EMBEDDING = re.compile(r"^(.*?)embeddings\.word_embeddings\.weight$")
_BUFFERS = ("position_ids", "token_type_ids")


def build_transformer(tensors, names: list[str], activation: str, num_heads: int | None):
    """``(assembler, "transformer")`` or ``None``."""
    match = next((_EMBEDDING.match(n) for n in names if "word_embeddings" in n), None)
    if match is None:
        return None
    p = match.group(1)
    try:
        return _build(tensors, names, p, activation, num_heads), "transformer"
    except (KeyError, ValueError):
        return None


def _build(tensors, names, p, activation, num_heads):
    asm = GraphAssembler(tensors)

    def need(name):
        if name not in tensors:
            raise KeyError(name)
        return name

    def optional(name):
        return name if name in tensors else ""

    word = tensors[need(f"{p}embeddings.word_embeddings.weight")]
    hidden = word.shape[1]
    heads = num_heads or (hidden // 64 if hidden % 64 == 0 else 1)
    if hidden % heads:
        raise ValueError("hidden size not divisible by heads")
    emb = f"{p}embeddings."
    stream = asm.group(f"{emb}stream", hidden, "stream", 0, symmetry="perm", perm_group="stream",
                       norm=tuple(t for t in (optional(f"{emb}LayerNorm.weight"), optional(f"{emb}LayerNorm.bias")) if t))
    for table in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        if f"{emb}{table}.weight" in tensors:
            w = tensors[f"{emb}{table}.weight"]
            if w.ndim != 2 or w.shape[1] != hidden:
                raise ValueError(table)
            src = asm.group(f"{emb}{table}", w.shape[0], "input", 0)
            asm.edge(src, stream, "embedding", f"{emb}{table}.weight")

    layer_ids = sorted({int(m.group(1)) for m in (re.match(rf"^{re.escape(p)}encoder\.layer\.(\d+)\.", n)
                                                  for n in names) if m})
    depth = 0
    for i in layer_ids:
        L = f"{p}encoder.layer.{i}."
        qkv = []
        for part, kind, perm in (("query", "query", "qk"), ("key", "key", "qk"), ("value", "value", "v")):
            name = f"{L}attention.self.{part}"
            w = tensors[need(f"{name}.weight")]
            if w.shape != (hidden, hidden):
                raise ValueError(name)
            g = asm.group(name, hidden, kind, depth + 1, symmetry="perm", perm_group=f"{L}{perm}",
                          heads=heads, head_group=f"{L}heads", bias=optional(f"{name}.bias"))
            asm.edge(stream, g, "linear", f"{name}.weight")
            qkv.append(g)
        attn = _stream_group(asm, f"{L}attention.output", hidden, depth + 2, need, optional)
        asm.edge(qkv[2], attn, "linear", need(f"{L}attention.output.dense.weight"))
        asm.edge(stream, attn, "residual", name=f"{L}attention.residual")
        inter_w = tensors[need(f"{L}intermediate.dense.weight")]
        inter = asm.group(f"{L}intermediate", inter_w.shape[0], "hidden", depth + 3,
                          symmetry=hidden_symmetry(activation, False), bias=optional(f"{L}intermediate.dense.bias"))
        asm.edge(attn, inter, "linear", f"{L}intermediate.dense.weight")
        out = _stream_group(asm, f"{L}output", hidden, depth + 4, need, optional)
        asm.edge(inter, out, "linear", need(f"{L}output.dense.weight"))
        asm.edge(attn, out, "residual", name=f"{L}output.residual")
        stream, depth = out, depth + 4

    if f"{p}pooler.dense.weight" in tensors:
        depth += 1
        pooled = asm.group(f"{p}pooler", hidden, "hidden", depth, symmetry=hidden_symmetry("tanh", False),
                           bias=optional(f"{p}pooler.dense.bias"))
        asm.edge(stream, pooled, "linear", f"{p}pooler.dense.weight")
        stream = pooled
    head = next((n for n in names if re.match(r"^(classifier|cls|head)(\.\w+)*\.weight$", n)
                 and tensors[n].ndim == 2), None)
    if head:
        w = tensors[head]
        if w.shape[1] != asm.groups[stream].size:
            raise ValueError(head)
        out = asm.group(head.rpartition(".")[0], w.shape[0], "output", depth + 1,
                        bias=optional(head.rpartition(".")[0] + ".bias"))
        asm.edge(stream, out, "linear", head)
    unused = [n for n in names if n not in asm.used_tensors() and not n.endswith(_BUFFERS)]
    if unused:
        raise KeyError(unused[0])
    return asm


def _stream_group(asm, name, hidden, layer, need, optional):
    w = asm.tensors[need(f"{name}.dense.weight")]
    if w.shape[0] != hidden:
        raise ValueError(name)
    norm = tuple(t for t in (optional(f"{name}.LayerNorm.weight"), optional(f"{name}.LayerNorm.bias")) if t)
    return asm.group(name, hidden, "stream", layer, symmetry="perm", perm_group="stream",
                     bias=optional(f"{name}.dense.bias"), norm=norm)
