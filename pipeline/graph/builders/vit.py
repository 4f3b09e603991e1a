"""Vision transformers with Hugging Face parameter names (``ViTModel`` / ``ViTForImageClassification``,
both the ``vit.encoder.layer.N.attention.attention.query`` and the ``vit.layers.N.attention.q_proj``
spellings).

Graph: the pixel channels feed the residual stream through the patch-embedding convolution (a
``linear`` block with a ``patch x patch`` kernel per edge), and the class token and the position
embeddings are ``embedding`` blocks from input groups of one and of ``patches + 1`` nodes. Layers are
pre-norm: each LayerNorm is a group of its own, fed by the stream through a residual block, that
carries the norm's parameters and feeds the attention (``layernorm_before``) or the MLP
(``layernorm_after``); the attention output and the MLP output are stream groups with a residual
from the stream before them. The final LayerNorm feeds the classifier. Every stream and norm group
shares the permutation ``stream``; query, key and value groups are annotated as in
:mod:`.transformer`.
"""
from __future__ import annotations

import re

from pipeline.graph.builders.common import (GraphAssembler, LayoutMismatch, PreNormLayer, attention_heads,
                                            build_or_explain, layer_indices, model_prefix, pre_norm_layer)

#: (the layers' prefix, where a layer keeps its parameters), per spelling
SPELLINGS = (("encoder.layer.", PreNormLayer("layernorm_before", "attention.attention.query", "attention.attention.key",
                                             "attention.attention.value", "attention.output.dense", "layernorm_after",
                                             "intermediate.dense", "output.dense")),
             ("layers.", PreNormLayer("layernorm_before", "attention.q_proj", "attention.k_proj", "attention.v_proj",
                                      "attention.o_proj", "layernorm_after", "mlp.fc1", "mlp.fc2")))
_PATCHES = re.compile(r"^(.*?)embeddings\.patch_embeddings\.projection\.weight$")


def build_vit(tensors, names: list[str], activation: str, num_heads: int | None):
    """``(assembler, "transformer")``, ``None`` when the parameters are not this family's; raises
    :class:`~pipeline.graph.builders.common.LayoutMismatch` when they are but do not fit."""
    p = model_prefix(_PATCHES, names)
    if p is None:
        return None
    scheme = next((s for s in SPELLINGS if any(n.startswith(f"{p}{s[0]}") for n in names)), None)
    if scheme is None:
        raise LayoutMismatch("ViT: patch embeddings without encoder layers")
    return build_or_explain("ViT", _build, tensors, names, p, scheme, activation, num_heads), "transformer"


def _build(tensors, names, p, scheme: tuple[str, PreNormLayer], activation, num_heads):
    asm = GraphAssembler(tensors)
    emb = f"{p}embeddings."
    patches = tensors[asm.need(f"{emb}patch_embeddings.projection.weight")]
    if patches.ndim != 4:
        raise ValueError("patch embedding")
    hidden = patches.shape[0]
    heads = attention_heads(hidden, num_heads)
    pixels = asm.group(f"{emb}pixels", patches.shape[1], "input", 0)
    stream = asm.group(f"{emb}stream", hidden, "stream", 0, symmetry="perm", perm_group="stream",
                       bias=asm.optional(f"{emb}patch_embeddings.projection.bias"))
    asm.edge(pixels, stream, "linear", f"{emb}patch_embeddings.projection.weight")
    for table in ("cls_token", "position_embeddings"):
        t = tensors[asm.need(f"{emb}{table}")]
        if t.shape[-1] != hidden or t.size % hidden:
            raise ValueError(table)
        asm.edge(asm.group(f"{emb}{table}", t.size // hidden, "input", 0), stream, "embedding", f"{emb}{table}")

    depth, (layers, layer_names) = 0, scheme
    for i in layer_indices(names, p + layers):
        stream = pre_norm_layer(asm, f"{p}{layers}{i}.", layer_names, stream, depth, hidden, heads, activation)
        depth += 6
    if f"{p}layernorm.weight" in tensors:
        stream, depth = asm.pre_norm(f"{p}layernorm", stream, depth + 1), depth + 1
    if "classifier.weight" in tensors:
        asm.dense("classifier", stream, 0, "output", depth + 1)
    asm.check_all_used(names)
    return asm
