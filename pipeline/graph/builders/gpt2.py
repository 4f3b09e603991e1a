"""GPT-2 with Hugging Face parameter names (``wte``, ``wpe``, ``h.N.ln_1``, ``h.N.attn.c_attn``,
``h.N.attn.c_proj``, ``h.N.ln_2``, ``h.N.mlp.c_fc``, ``h.N.mlp.c_proj``, ``ln_f``), read through the
graph layout of :mod:`pipeline.graph.layouts` (``Conv1D`` weights transposed, ``c_attn`` split into
``c_attn.q``, ``c_attn.k``, ``c_attn.v``).

Graph: token and position embeddings feed the residual stream. Layers are pre-norm, each LayerNorm
a group of its own in the stream's permutation (fed by a residual block, carrying the norm's weight
and bias). Attention: query, key and value groups of ``h`` heads in one head group (absolute
positions: units permute within heads, query and key units together); values feed ``c_proj``, plus
a residual from the layer's input stream. The MLP's ``c_fc`` units (GELU: permutations only) feed
``c_proj``, plus a residual. ``ln_f`` feeds ``lm_head`` (saved tied: the token embedding table
itself) or a sequence-classification ``score``; a bare ``GPT2Model`` ends at ``ln_f``.
"""
from __future__ import annotations

import re

from pipeline.graph.builders.common import (GraphAssembler, PreNormLayer, attention_heads, build_or_explain,
                                            layer_indices, model_prefix, pre_norm_layer)

_EMBEDDING = re.compile(r"^(.*?)wte\.weight$")
_LAYER = PreNormLayer("ln_1", "attn.c_attn.q", "attn.c_attn.k", "attn.c_attn.v", "attn.c_proj", "ln_2", "mlp.c_fc",
                      "mlp.c_proj")
#: the causal mask buffers older checkpoints carry
_BUFFERS = (".attn.bias", ".attn.masked_bias")


def build_gpt2(tensors, names: list[str], activation: str, num_heads: int | None):
    """``(assembler, "transformer")``, ``None`` when the parameters are not GPT-2's; raises
    :class:`~pipeline.graph.builders.common.LayoutMismatch` when they are but do not fit."""
    p = model_prefix(_EMBEDDING, names)
    if p is None or not any(n.startswith(f"{p}h.0.attn.c_attn.") for n in names):
        return None
    return build_or_explain("GPT-2", _build, tensors, names, p, activation, num_heads), "transformer"


def _build(tensors, names, p, activation, num_heads):
    asm = GraphAssembler(tensors)
    table = f"{p}wte.weight"
    vocab, hidden = tensors[table].shape
    heads = attention_heads(hidden, num_heads)
    stream = asm.group(f"{p}stream", hidden, "stream", 0, symmetry="perm", perm_group="stream")
    asm.edge(asm.group(f"{p}wte", vocab, "input", 0), stream, "embedding", table)
    positions = tensors[asm.need(f"{p}wpe.weight")]
    if positions.ndim != 2 or positions.shape[1] != hidden:
        raise ValueError("wpe")
    asm.edge(asm.group(f"{p}wpe", positions.shape[0], "input", 0), stream, "embedding", f"{p}wpe.weight")

    depth = 0
    for i in layer_indices(names, f"{p}h."):
        stream = pre_norm_layer(asm, f"{p}h.{i}.", _LAYER, stream, depth, hidden, heads, activation)
        depth += 6
    final = asm.pre_norm(f"{p}ln_f", stream, depth + 1)
    if "score.weight" in tensors:
        asm.dense("score", final, 0, "output", depth + 2)
    elif "lm_head.weight" in tensors:
        asm.dense("lm_head", final, vocab, "output", depth + 2)
    elif p:  # a language-modelling head tied to the embedding table (a bare GPT2Model has no prefix)
        asm.edge(final, asm.group("lm_head", vocab, "output", depth + 2), "linear", table, name="lm_head")
    asm.check_all_used(names, lambda n: n.endswith(_BUFFERS))
    return asm

