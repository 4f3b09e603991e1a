"""Transformer encoders with Hugging Face parameter names: BERT and RoBERTa (``encoder.layer.N``),
DistilBERT (``transformer.layer.N``), with their sequence-classification and masked-LM heads.

Graph: token/position/type input nodes feed the embedding stream through ``embedding`` edge blocks.
Per layer: the stream feeds query, key and value groups (``heads`` heads each); values feed the
attention output through its dense layer, plus a residual edge block from the layer's input stream;
then the FFN's intermediate group and the layer's output stream (residual from the attention
output). LayerNorm parameters are node features of the stream group they normalize. Every stream
group shares the permutation ``stream``; query and key units share a within-head permutation, and
q/k/v share the layer's head permutation. Heads:

* BERT: an optional pooler (tanh) and ``classifier``;
* RoBERTa: ``classifier.dense`` (tanh) and ``classifier.out_proj`` on the first token;
* DistilBERT: ``pre_classifier`` (ReLU) and ``classifier`` on the first token;
* masked LM (``cls.predictions``): ``transform.dense`` with the activation and a LayerNorm, then the
  decoder to the vocabulary with its bias. Saved tied to the word embeddings (no decoder weight in
  the file), the decoder *is* the embedding table: its block reads that tensor, and the transform
  group shares the residual stream's permutation, which that table's columns carry.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from pipeline.graph.builders.common import (GraphAssembler, attention_heads, build_or_explain,
                                            hidden_symmetry, layer_indices, model_prefix)

_BUFFERS = ("position_ids", "token_type_ids")
#: parameters a state dict may hold twice under two names (a tied copy); the graph reads one
_ALIASES = {"cls.predictions.decoder.bias": "cls.predictions.bias"}


@dataclass(frozen=True)
class Names:
    """Where a transformer family keeps each parameter (prefixes relative to a layer's)."""
    layers: str                 # the layers' prefix, before their index
    query: str
    key: str
    value: str
    attention_out: str          # the attention output's dense layer
    attention_norm: str
    ffn_in: str
    ffn_out: str
    output_norm: str


BERT = Names("encoder.layer.", "attention.self.query", "attention.self.key", "attention.self.value",
             "attention.output.dense", "attention.output.LayerNorm", "intermediate.dense", "output.dense",
             "output.LayerNorm")
DISTILBERT = Names("transformer.layer.", "attention.q_lin", "attention.k_lin", "attention.v_lin",
                   "attention.out_lin", "sa_layer_norm", "ffn.lin1", "ffn.lin2", "output_layer_norm")
_EMBEDDING = re.compile(r"^(.*?)embeddings\.word_embeddings\.weight$")


def build_transformer(tensors, names: list[str], activation: str, num_heads: int | None):
    """``(assembler, "transformer")``, ``None`` when the parameters are not this family's; raises
    :class:`~pipeline.graph.builders.common.LayoutMismatch` when they are but do not fit."""
    p = model_prefix(_EMBEDDING, names)
    if p is None:
        return None
    scheme = DISTILBERT if any(n.startswith(f"{p}{DISTILBERT.layers}") for n in names) else BERT
    family = "DistilBERT" if scheme is DISTILBERT else "BERT-style encoder"
    return build_or_explain(family, _build, tensors, names, p, scheme, activation, num_heads), "transformer"


def _build(tensors, names, p, scheme: Names, activation, num_heads):
    asm = GraphAssembler(tensors)

    word = tensors[asm.need(f"{p}embeddings.word_embeddings.weight")]
    hidden = word.shape[1]
    heads = attention_heads(hidden, num_heads)
    emb = f"{p}embeddings."
    stream = asm.group(f"{emb}stream", hidden, "stream", 0, symmetry="perm", perm_group="stream",
                       norm=asm.norm(f"{emb}LayerNorm"))
    for table in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        if f"{emb}{table}.weight" in tensors:
            w = tensors[f"{emb}{table}.weight"]
            if w.ndim != 2 or w.shape[1] != hidden:
                raise ValueError(table)
            src = asm.group(f"{emb}{table}", w.shape[0], "input", 0)
            asm.edge(src, stream, "embedding", f"{emb}{table}.weight")

    depth = 0
    for i in layer_indices(names, p + scheme.layers):
        L = f"{p}{scheme.layers}{i}."
        qkv = [asm.dense(f"{L}{part}", stream, hidden, kind, depth + 1, symmetry="perm", perm_group=f"{L}{perm}",
                     heads=heads, head_group=f"{L}heads")
               for part, kind, perm in ((scheme.query, "query", "qk"), (scheme.key, "key", "qk"),
                                        (scheme.value, "value", "v"))]
        attn = asm.dense(f"{L}{scheme.attention_out}", qkv[2], hidden, "stream", depth + 2, symmetry="perm",
                     perm_group="stream", norm=asm.norm(f"{L}{scheme.attention_norm}"))
        asm.edge(stream, attn, "residual", name=f"{L}attention.residual")
        inter = asm.dense(f"{L}{scheme.ffn_in}", attn, 0, "hidden", depth + 3, symmetry=hidden_symmetry(activation, False))
        out = asm.dense(f"{L}{scheme.ffn_out}", inter, hidden, "stream", depth + 4, symmetry="perm", perm_group="stream",
                    norm=asm.norm(f"{L}{scheme.output_norm}"))
        asm.edge(attn, out, "residual", name=f"{L}output.residual")
        stream, depth = out, depth + 4
    _head(asm, tensors, names, p, stream, depth)
    used = asm.used_tensors()
    asm.check_all_used(names, lambda n: n.endswith(_BUFFERS) or (
        n in _ALIASES and _ALIASES[n] in used and np.array_equal(tensors[n], tensors[_ALIASES[n]])))
    return asm


def _head(asm, tensors, names, p, stream, depth) -> None:
    """The classification or masked-LM head on the last stream group (none for a bare encoder)."""
    def last(name, src, layer):
        return asm.dense(name, src, 0, "output", layer)

    if "cls.predictions.transform.dense.weight" in tensors:  # masked LM
        word, decoder = f"{p}embeddings.word_embeddings.weight", "cls.predictions.decoder.weight"
        tied = decoder not in tensors or np.array_equal(tensors[decoder], tensors[word])
        transform = asm.dense("cls.predictions.transform.dense", stream, 0, "hidden", depth + 1, symmetry="perm",
                          perm_group="stream" if tied else "", norm=asm.norm("cls.predictions.transform.LayerNorm"))
        vocab = asm.group("cls.predictions.decoder", tensors[word if tied else decoder].shape[0], "output",
                          depth + 2, bias=next((b for b in ("cls.predictions.bias", "cls.predictions.decoder.bias")
                                                if b in tensors), ""))
        asm.edge(transform, vocab, "linear", word if decoder not in tensors else decoder, name="cls.predictions.decoder")
        return
    if "classifier.out_proj.weight" in tensors:  # RoBERTa
        pooled = asm.dense("classifier.dense", stream, 0, "hidden", depth + 1, symmetry=hidden_symmetry("tanh", False))
        last("classifier.out_proj", pooled, depth + 2)
        return
    if "pre_classifier.weight" in tensors:  # DistilBERT
        pooled = asm.dense("pre_classifier", stream, 0, "hidden", depth + 1, symmetry=hidden_symmetry("relu", False))
        last("classifier", pooled, depth + 2)
        return
    if f"{p}pooler.dense.weight" in tensors:  # BERT
        stream = asm.dense(f"{p}pooler.dense", stream, 0, "hidden", depth + 1, symmetry=hidden_symmetry("tanh", False))
        depth += 1
    head = next((n for n in names if re.match(r"^(classifier|cls|head)(\.\w+)*\.weight$", n)
                 and tensors[n].ndim == 2), None)
    if head:
        last(head.rpartition(".")[0], stream, depth + 1)
