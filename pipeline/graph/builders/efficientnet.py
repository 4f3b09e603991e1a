"""EfficientNet with Hugging Face parameter names (``efficientnet.embeddings``,
``efficientnet.encoder.blocks.N.{expansion, depthwise_conv, squeeze_excite, projection}``,
``efficientnet.encoder.top_conv``, ``classifier``).

Graph: the image's channels feed the stem convolution. Each block optionally expands its input with
a 1x1 convolution, filters every channel with its own kernel (``depthwise``: a channel's input and
output are one unit), and gates the channels by squeeze-and-excitation: the global average pool of
the filtered channels feeds the ``reduce`` units (their own permutation) and those the ``expand``
units, one per channel and in the channels' permutation, whose sigmoids multiply the channels
(``gate`` blocks into a gated group, fed the filtered channels by a ``residual`` block); a 1x1
projection gives the block's output. Every block but the first of each stage adds its input
(``residual``) and shares its permutation. The stages are the architecture's
(``num_block_repeats`` scaled by ``depth_coefficient`` in ``config.json``); without a config, a
block whose input and output widths agree shares their permutation without the residual edge (a
smaller group, right either way). BatchNorm follows every convolution: channels permute, unscaled.
The top 1x1 convolution feeds the classifier through the global average pool.
"""
from __future__ import annotations

import itertools
import math

from pipeline.graph.builders.common import GraphAssembler, build_or_explain, layer_indices

_PREFIX = "efficientnet."


def build_efficientnet(tensors, names: list[str], config: dict | None):
    """``(assembler, "cnn")``, ``None`` when the parameters are not EfficientNet's; raises
    :class:`~pipeline.graph.builders.common.LayoutMismatch` when they are but do not fit."""
    if f"{_PREFIX}embeddings.convolution.weight" not in tensors:
        return None
    return build_or_explain("EfficientNet", _build, tensors, names, config or {}), "cnn"


def stage_sizes(config: dict) -> list[int] | None:
    """Blocks per stage (``transformers``' ``EfficientNetEncoder``: ``num_block_repeats`` scaled by
    ``depth_coefficient``, rounded up), or ``None`` without them in the config."""
    repeats, depth = config.get("num_block_repeats"), config.get("depth_coefficient")
    if not repeats or depth is None:
        return None
    return [int(math.ceil(depth * r)) for r in repeats]


def _build(tensors, names, config: dict):
    asm = GraphAssembler(tensors)
    streams = (f"stream{i}" for i in itertools.count(1))
    stem = tensors[asm.need(f"{_PREFIX}embeddings.convolution.weight")]
    pixels = asm.group("pixels", stem.shape[1] if stem.ndim == 4 else 1, "input", 0)
    x = asm.conv(f"{_PREFIX}embeddings.convolution.weight", f"{_PREFIX}embeddings.batchnorm", pixels, 1, next(streams))
    blocks, sizes = layer_indices(names, f"{_PREFIX}encoder.blocks."), stage_sizes(config)
    if sizes is not None and sum(sizes) != len(blocks):
        raise ValueError(f"config.json's stages of {sizes} blocks do not make the {len(blocks)} blocks")
    starts = None if sizes is None else set(itertools.accumulate([0] + sizes[:-1]))
    depth = 1
    for i in blocks:
        B = f"{_PREFIX}encoder.blocks.{i}."
        h = x
        if f"{B}expansion.expand_conv.weight" in tensors:
            h = asm.conv(f"{B}expansion.expand_conv.weight", f"{B}expansion.expand_bn", h, depth + 1, f"{B}channels")
        elif not asm.groups[h].perm_group:
            raise ValueError(f"{B}: a depthwise convolution on unpermuted channels")
        filtered = asm.conv(f"{B}depthwise_conv.depthwise_conv.weight", f"{B}depthwise_conv.depthwise_norm", h,
                            depth + 2)
        gated = _squeeze_excite(asm, f"{B}squeeze_excite.", filtered, depth + 3)
        width = tensors[asm.need(f"{B}projection.project_conv.weight")].shape[0]
        same = width == asm.groups[x].size
        residual = same and starts is not None and i not in starts
        out = asm.conv(f"{B}projection.project_conv.weight", f"{B}projection.project_bn", gated, depth + 5,
                       asm.groups[x].perm_group if same and (residual or starts is None) else next(streams))
        if residual:
            asm.edge(x, out, "residual", name=f"{B}residual")
        x, depth = out, depth + 5
    x = asm.conv(f"{_PREFIX}encoder.top_conv.weight", f"{_PREFIX}encoder.top_bn", x, depth + 1, "top")
    if "classifier.weight" in tensors:
        asm.dense("classifier", x, 0, "output", depth + 2)
    asm.check_all_used(names, lambda n: n.endswith("num_batches_tracked"))
    return asm


def _squeeze_excite(asm: GraphAssembler, prefix: str, channels: int, layer: int) -> int:
    """The squeeze-and-excitation of group ``channels``: ``reduce`` (1x1 convolution on the pooled
    channels, with bias), ``expand`` back to one unit per channel (in the channels' permutation),
    and the gated channels, which it returns."""
    perm_group, size = asm.groups[channels].perm_group, asm.groups[channels].size
    reduce = asm.tensors[asm.need(f"{prefix}reduce.weight")]
    expand = asm.tensors[asm.need(f"{prefix}expand.weight")]
    if reduce.ndim != 4 or reduce.shape[1:] != (size, 1, 1) or expand.shape != (size, reduce.shape[0], 1, 1):
        raise ValueError(f"{prefix}: squeeze-and-excitation shapes {list(reduce.shape)}, {list(expand.shape)}")
    r = asm.group(f"{prefix}reduce", reduce.shape[0], "hidden", layer, symmetry="perm",
                  bias=asm.optional(f"{prefix}reduce.bias"))
    asm.edge(channels, r, "linear", f"{prefix}reduce.weight")
    e = asm.group(f"{prefix}expand", size, "hidden", layer + 1, symmetry="perm", perm_group=perm_group,
                  bias=asm.optional(f"{prefix}expand.bias"))
    asm.edge(r, e, "linear", f"{prefix}expand.weight")
    gated = asm.group(f"{prefix}gated", size, "hidden", layer + 1, symmetry="perm", perm_group=perm_group)
    asm.edge(channels, gated, "residual", name=f"{prefix}channels")
    asm.edge(e, gated, "gate", name=f"{prefix}gate")
    return gated
