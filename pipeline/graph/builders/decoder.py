"""Decoder-only transformers of the LLaMA family with Hugging Face parameter names: LLaMA, Mistral,
Qwen2 (``embed_tokens``, ``layers.N.self_attn.{q,k,v,o}_proj``, ``mlp.{gate,up,down}_proj``,
``input_layernorm``, ``post_attention_layernorm``, ``norm``, ``lm_head``).

Graph: the token embedding feeds the residual stream. Layers are pre-norm, each RMSNorm a group of
its own (fed by the stream through a residual block, carrying the norm's weight; it keeps
permutations only). Attention: query, key and value groups of ``h_q``, ``h_kv`` and ``h_kv`` heads in
one head group; rotary position embeddings pair fixed dimensions of each query and key head, so
their units move only with whole heads (``head_dims="fixed"``), while value units permute freely
within a head. Under grouped-query attention (``h_kv < h_q``) a ``repeat`` block hands each
key/value head's values to an attention-output group of ``h_q`` heads (the query heads it serves),
which feeds ``o_proj``; otherwise the values feed ``o_proj`` directly. The gated MLP's ``gate_proj``
and ``up_proj`` groups share one permutation; ``down_proj`` reads the ``up_proj`` group, whose units
may also be rescaled (``silu(g) * (q u)`` then ``down / q``). The final norm feeds ``lm_head``, or,
saved tied, the embedding table itself (the stream's permutation acts on its columns).
"""
from __future__ import annotations

import re

from pipeline.graph.builders.common import (GraphAssembler, attention_heads, build_or_explain,
                                            layer_indices, model_prefix)

_EMBEDDING = re.compile(r"^(.*?)embed_tokens\.weight$")
_BUFFERS = ("rotary_emb.inv_freq",)


def build_decoder(tensors, names: list[str], activation: str, num_heads: int | None):
    """``(assembler, "transformer")``, ``None`` when the parameters are not this family's; raises
    :class:`~pipeline.graph.builders.common.LayoutMismatch` when they are but do not fit."""
    p = model_prefix(_EMBEDDING, names)
    if p is None or f"{p}layers.0.mlp.gate_proj.weight" not in tensors:
        return None
    return build_or_explain("LLaMA-family decoder", _build, tensors, names, p, activation, num_heads), "transformer"


def _build(tensors, names, p, activation, num_heads):
    asm = GraphAssembler(tensors)
    table = f"{p}embed_tokens.weight"
    vocab, hidden = tensors[table].shape
    q_rows = tensors[asm.need(f"{p}layers.0.self_attn.q_proj.weight")].shape[0]
    k_rows = tensors[asm.need(f"{p}layers.0.self_attn.k_proj.weight")].shape[0]
    heads = attention_heads(q_rows, num_heads)
    head_dim = q_rows // heads
    if k_rows % head_dim or heads % (k_rows // head_dim):
        raise ValueError(f"key width {k_rows} is no whole number of heads of {head_dim} serving {heads} query heads")
    kv_heads = k_rows // head_dim
    tokens = asm.group(f"{p}embed_tokens", vocab, "input", 0)
    stream = asm.group(f"{p}stream", hidden, "stream", 0, symmetry="perm", perm_group="stream")
    asm.edge(tokens, stream, "embedding", table)

    depth = 0
    for i in layer_indices(names, f"{p}layers."):
        L = f"{p}layers.{i}."
        before = asm.pre_norm(f"{L}input_layernorm", stream, depth + 1)
        attention = dict(symmetry="perm", head_group=f"{L}heads")
        asm.dense(f"{L}self_attn.q_proj", before, q_rows, "query", depth + 2, perm_group=f"{L}qk", heads=heads,
                  head_dims="fixed", **attention)
        asm.dense(f"{L}self_attn.k_proj", before, k_rows, "key", depth + 2, perm_group=f"{L}qk", heads=kv_heads,
                  head_dims="fixed", **attention)
        values = asm.dense(f"{L}self_attn.v_proj", before, k_rows, "value", depth + 2, perm_group=f"{L}v",
                           heads=kv_heads, **attention)
        if kv_heads < heads:
            served = asm.group(f"{L}self_attn.heads", q_rows, "value", depth + 2, perm_group=f"{L}v", heads=heads,
                               **attention)
            asm.edge(values, served, "repeat", name=f"{L}self_attn.repeat")
            values = served
        attn = asm.dense(f"{L}self_attn.o_proj", values, hidden, "stream", depth + 3, symmetry="perm",
                         perm_group="stream")
        asm.edge(stream, attn, "residual", name=f"{L}self_attn.residual")
        after = asm.pre_norm(f"{L}post_attention_layernorm", attn, depth + 4)
        asm.dense(f"{L}mlp.gate_proj", after, 0, "hidden", depth + 5, symmetry="perm", perm_group=f"{L}mlp")
        up = asm.dense(f"{L}mlp.up_proj", after, 0, "hidden", depth + 5, symmetry="perm_scale", perm_group=f"{L}mlp")
        out = asm.dense(f"{L}mlp.down_proj", up, hidden, "stream", depth + 6, symmetry="perm", perm_group="stream")
        asm.edge(attn, out, "residual", name=f"{L}mlp.residual")
        stream, depth = out, depth + 6
    final = asm.pre_norm(f"{p}norm", stream, depth + 1)
    if "lm_head.weight" in tensors:
        asm.dense("lm_head", final, vocab, "output", depth + 2)
    else:  # tied to the embedding table
        asm.edge(final, asm.group("lm_head", vocab, "output", depth + 2), "linear", table, name="lm_head")
    asm.check_all_used(names, lambda n: n.endswith(_BUFFERS))
    return asm
