"""T5 with Hugging Face parameter names (``shared``, ``encoder.block.N.layer.M``, ``decoder.block.N.layer.M``,
``{encoder,decoder}.final_layer_norm``, ``lm_head``): encoder-decoder or encoder only.

Graph: the shared token embedding feeds the encoder's and the decoder's residual streams (one table:
one stream permutation for both stacks, and for a tied ``lm_head``). Every sublayer is pre-norm (an
RMS norm without bias, a group of its own in the stream's permutation) and adds its output to the
stream. Self-attention: query, key and value groups (no biases) of ``h`` heads; the relative
position bias (``relative_attention_bias``, ``[buckets, h]``, in the first block of a stack) is
shared by every layer of its stack, so their heads permute together: one head group per stack's
self-attention, with the bias as an ``embedding`` block from the buckets to a group of ``h``
one-unit heads. Cross-attention (decoder): queries from the decoder's stream, keys and values from
the encoder's final norm, heads free per layer. Feed-forward: ``wi`` (ReLU: units permute and
rescale) and ``wo``; gated (``wi_0`` gate and ``wi_1``, whose units also rescale, one permutation).
The decoder's final norm feeds ``lm_head``, or, tied, the embedding table itself.
"""
from __future__ import annotations

import numpy as np

from pipeline.graph.builders.common import (GraphAssembler, attention_heads, build_or_explain, hidden_symmetry,
                                            layer_indices)

_BIAS = "relative_attention_bias.weight"
#: copies of ``shared.weight`` a state dict may carry under the stacks' names
_TIED = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")


def build_t5(tensors, names: list[str], activation: str, num_heads: int | None):
    """``(assembler, "transformer")``, ``None`` when the parameters are not T5's; raises
    :class:`~pipeline.graph.builders.common.LayoutMismatch` when they are but do not fit."""
    if "shared.weight" not in tensors or f"encoder.block.0.layer.0.SelfAttention.{_BIAS}" not in tensors:
        return None
    return build_or_explain("T5", _build, tensors, names, activation, num_heads), "transformer"


def _build(tensors, names, activation, num_heads):
    asm = GraphAssembler(tensors)
    vocab, hidden = tensors["shared.weight"].shape
    bias = tensors[f"encoder.block.0.layer.0.SelfAttention.{_BIAS}"]
    heads = bias.shape[1] if bias.ndim == 2 else 0
    if num_heads and num_heads != heads:
        raise ValueError(f"{num_heads} heads claimed, the relative position bias has {heads}")
    inner = tensors[asm.need("encoder.block.0.layer.0.SelfAttention.q.weight")].shape[0]
    attention_heads(inner, heads)

    def attention(L: str, queries: int, keys: int, layer: int, head_group: str) -> int:
        """Query/key/value groups of attention ``L`` (queries from group ``queries``, keys and values
        from ``keys``), through ``o`` into a new stream group."""
        shared = dict(symmetry="perm", heads=heads, head_group=head_group)
        asm.dense(f"{L}q", queries, inner, "query", layer, perm_group=f"{L}qk", **shared)
        asm.dense(f"{L}k", keys, inner, "key", layer, perm_group=f"{L}qk", **shared)
        values = asm.dense(f"{L}v", keys, inner, "value", layer, perm_group=f"{L}v", **shared)
        return asm.dense(f"{L}o", values, hidden, "stream", layer + 1, symmetry="perm", perm_group="stream")

    def feed_forward(F: str, src: int, layer: int) -> int:
        if f"{F}wi_0.weight" in tensors:  # gated: wi_0 is the gate, wi_1 the value
            asm.dense(f"{F}wi_0", src, 0, "hidden", layer, symmetry="perm", perm_group=f"{F}units")
            inner = asm.dense(f"{F}wi_1", src, 0, "hidden", layer, symmetry="perm_scale", perm_group=f"{F}units")
        else:
            inner = asm.dense(f"{F}wi", src, 0, "hidden", layer, symmetry=hidden_symmetry(activation, False))
        return asm.dense(f"{F}wo", inner, hidden, "stream", layer + 1, symmetry="perm", perm_group="stream")

    def sublayer(stream: int, norm: str, build, layer: int) -> int:
        before = asm.pre_norm(norm, stream, layer)
        out = build(before, layer + 1)
        asm.edge(stream, out, "residual", name=f"{norm}.residual")
        return out

    def stack(name: str, encoded: int | None) -> int:
        tokens = asm.group(f"{name}.tokens", vocab, "input", 0)
        stream = asm.group(f"{name}.stream", hidden, "stream", 0, symmetry="perm", perm_group="stream")
        asm.edge(tokens, stream, "embedding", "shared.weight", name=f"{name}.embed_tokens")
        buckets = tensors[asm.need(f"{name}.block.0.layer.0.SelfAttention.{_BIAS}")]
        if buckets.shape != (buckets.shape[0], heads):
            raise ValueError(f"{name}: relative position bias of shape {list(buckets.shape)} for {heads} heads")
        self_heads = f"{name}.self_attention.heads"
        position = asm.group(f"{name}.relative_attention_bias", heads, "key", 1, symmetry="perm",
                             perm_group=f"{name}.position", heads=heads, head_group=self_heads)
        asm.edge(asm.group(f"{name}.buckets", buckets.shape[0], "input", 0), position, "embedding",
                 f"{name}.block.0.layer.0.SelfAttention.{_BIAS}")
        depth = 0
        for i in layer_indices(names, f"{name}.block."):
            B = f"{name}.block.{i}.layer."
            stream = sublayer(stream, f"{B}0.layer_norm",
                              lambda src, layer: attention(f"{B}0.SelfAttention.", src, src, layer, self_heads),
                              depth + 1)
            m = 1
            if encoded is not None:
                stream = sublayer(stream, f"{B}1.layer_norm",
                                  lambda src, layer: attention(f"{B}1.EncDecAttention.", src, encoded, layer,
                                                               f"{B}1.EncDecAttention.heads"), depth + 3)
                m = 2
            stream = sublayer(stream, f"{B}{m}.layer_norm",
                              lambda src, layer: feed_forward(f"{B}{m}.DenseReluDense.", src, layer), depth + 2 * m + 1)
            depth += 2 * m + 2
        return asm.pre_norm(f"{name}.final_layer_norm", stream, depth + 1)

    encoded = stack("encoder", None)
    if any(n.startswith("decoder.") for n in names):
        final = stack("decoder", encoded)
        layer = asm.groups[final].layer + 1
        if "lm_head.weight" in tensors:
            asm.dense("lm_head", final, vocab, "output", layer)
        else:  # tied to the shared embedding table
            asm.edge(final, asm.group("lm_head", vocab, "output", layer), "linear", "shared.weight", name="lm_head")
    asm.check_all_used(names, lambda n: n in _TIED and np.array_equal(tensors[n], tensors["shared.weight"]))
    return asm
