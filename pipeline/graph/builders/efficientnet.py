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

from pipeline.graph.builders.common import GraphAssembler, build_or_explain, hidden_symmetry, layer_indices

_PREFIX = "efficientnet."


def build_efficientnet(tensors, names: list[str], activation: str, config: dict | None):
    """``(assembler, "cnn")``, ``None`` when the parameters are not EfficientNet's; raises
    :class:`~pipeline.graph.builders.common.LayoutMismatch` when they are but do not fit."""
    if f"{_PREFIX}embeddings.convolution.weight" not in tensors:
        return None
    return build_or_explain("EfficientNet", _build, tensors, names, activation, config or {}), "cnn"


def stage_sizes(config: dict) -> list[int] | None:
    """Blocks per stage (``transformers``' ``EfficientNetEncoder``: ``num_block_repeats`` scaled by
    ``depth_coefficient``, rounded up), or ``None`` without them in the config."""
    repeats, depth = config.get("num_block_repeats"), config.get("depth_coefficient")
    if not repeats or depth is None:
        return None
    return [int(math.ceil(depth * r)) for r in repeats]


def _build(tensors, names, activation: str, config: dict):
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
        gated = asm.squeeze_excite(f"{B}squeeze_excite.reduce", f"{B}squeeze_excite.expand", filtered, depth + 3,
                                   hidden_symmetry(activation, False))
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

