"""MobileNetV2 with Hugging Face parameter names (``mobilenet_v2.conv_stem.{first_conv, expand_1x1,
conv_3x3, reduce_1x1}``, ``mobilenet_v2.layer.N.{expand_1x1, conv_3x3, reduce_1x1}``,
``mobilenet_v2.conv_1x1``, ``classifier``; each layer a ``convolution`` and a BatchNorm
``normalization``).

Graph: the image's channels feed the stem's convolution; each inverted-residual block expands its
input with a 1x1 convolution, filters every expanded channel with its own 3x3 kernel (a
``depthwise`` block: a channel's input and output are one unit, so they share a permutation), and
projects back with a 1x1 convolution, whose output is the block's. A block whose stride is 1 and
whose input and output widths agree adds its input (a ``residual`` block): its output shares the
input's permutation. Strides are not in the weights; they are the architecture's (the stride table
of ``transformers``' ``MobileNetV2Model``, with ``output_stride`` from ``config.json``). With
torchvision's names (``features.0`` the stem, ``features.N.conv.M`` the blocks, ``classifier.1``),
which come with no config, a block whose input and output widths agree is taken as residual (as in
every torchvision configuration; were it not, the shared permutation would be a subgroup of its
symmetry, never a wrong one). Every
convolution is followed by BatchNorm, so channels permute (no scaling: ReLU6 clips). The last 1x1
convolution feeds the classifier through the global average pool.
"""
from __future__ import annotations

import itertools

from pipeline.graph.builders.common import GraphAssembler, build_or_explain, layer_indices

_PREFIX = "mobilenet_v2."
#: strides of the sixteen inverted-residual blocks (after the stem's stride 2)
STRIDES = (2, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1)


def build_mobilenet(tensors, names: list[str], output_stride: int | None):
    """``(assembler, "cnn")``, ``None`` when the parameters are not MobileNetV2's (``transformers``'
    or torchvision's names); raises :class:`~pipeline.graph.builders.common.LayoutMismatch` when
    they are but do not fit. ``output_stride``: ``config.json``'s (default 32)."""
    if f"{_PREFIX}conv_stem.first_conv.convolution.weight" in tensors:
        return build_or_explain("MobileNetV2", _build, tensors, names, output_stride or 32), "cnn"
    first_block = tensors.get("features.1.conv.0.0.weight")
    if "features.0.0.weight" in tensors and first_block is not None and first_block.ndim == 4 \
            and first_block.shape[1] == 1:
        return build_or_explain("torchvision MobileNetV2", _build_torchvision, tensors, names), "cnn"
    return None


def _build(tensors, names, output_stride: int):
    asm = GraphAssembler(tensors)
    streams = (f"stream{i}" for i in itertools.count(1))

    first = tensors[asm.need(f"{_PREFIX}conv_stem.first_conv.convolution.weight")]
    pixels = asm.group("pixels", first.shape[1] if first.ndim == 4 else 1, "input", 0)
    stem = f"{_PREFIX}conv_stem."
    x = asm.hf_conv(f"{stem}first_conv", pixels, 1, "stem")
    depth = 1
    if f"{stem}expand_1x1.convolution.weight" in tensors:
        x, depth = asm.hf_conv(f"{stem}expand_1x1", x, 2, "stem.expand"), 2
    x = asm.hf_conv(f"{stem}conv_3x3", x, depth + 1)
    x = asm.hf_conv(f"{stem}reduce_1x1", x, depth + 2, next(streams))
    depth += 2
    current = 2
    blocks = sorted({int(n.split(".")[2]) for n in names if n.startswith(f"{_PREFIX}layer.")})
    if blocks != list(range(len(blocks))) or len(blocks) > len(STRIDES):
        raise ValueError(f"blocks {blocks} are not MobileNetV2's")
    for i in blocks:
        L = f"{_PREFIX}layer.{i}."
        if current == output_stride:
            stride = 1
        else:
            stride, current = STRIDES[i], current * STRIDES[i]
        expanded = asm.hf_conv(f"{L}expand_1x1", x, depth + 1, f"{L}expanded")
        filtered = asm.hf_conv(f"{L}conv_3x3", expanded, depth + 2)
        out_width = tensors[asm.need(f"{L}reduce_1x1.convolution.weight")].shape[0]
        residual = stride == 1 and out_width == asm.groups[x].size
        out = asm.hf_conv(f"{L}reduce_1x1", filtered, depth + 3,
                          asm.groups[x].perm_group if residual else next(streams))
        if residual:
            asm.edge(x, out, "residual", name=f"{L}residual")
        x, depth = out, depth + 3
    x = asm.hf_conv(f"{_PREFIX}conv_1x1", x, depth + 1, "head")
    if "classifier.weight" in tensors:
        asm.dense("classifier", x, 0, "output", depth + 2)
    asm.check_all_used(names, lambda n: n.endswith("num_batches_tracked"))
    return asm


def _build_torchvision(tensors, names):
    asm = GraphAssembler(tensors)
    streams = (f"stream{i}" for i in itertools.count(1))
    stem = tensors[asm.need("features.0.0.weight")]
    pixels = asm.group("pixels", stem.shape[1] if stem.ndim == 4 else 1, "input", 0)
    x = asm.conv("features.0.0.weight", "features.0.1", pixels, 1, next(streams))
    depth = 1
    stages = layer_indices(names, "features.")
    for n in stages[1:]:
        F = f"features.{n}."
        if f"{F}conv.0.0.weight" not in tensors:  # the last 1x1 convolution
            if n != stages[-1]:
                raise ValueError(f"{F}: a plain convolution before the last block")
            x, depth = asm.conv(f"{F}0.weight", f"{F}1", x, depth + 1, "head"), depth + 1
            continue
        expands = tensors[f"{F}conv.0.0.weight"].shape[1] != 1
        h = x
        if expands:
            h = asm.conv(f"{F}conv.0.0.weight", f"{F}conv.0.1", h, depth + 1, f"{F}expanded")
        elif not asm.groups[h].perm_group:
            raise ValueError(f"{F}: a depthwise convolution on unpermuted channels")
        k = int(expands)
        h = asm.conv(f"{F}conv.{k}.0.weight", f"{F}conv.{k}.1", h, depth + 2)
        width = tensors[asm.need(f"{F}conv.{k + 1}.weight")].shape[0]
        residual = width == asm.groups[x].size
        out = asm.conv(f"{F}conv.{k + 1}.weight", f"{F}conv.{k + 2}", h, depth + 3,
                       asm.groups[x].perm_group if residual else next(streams))
        if residual:
            asm.edge(x, out, "residual", name=f"{F}residual")
        x, depth = out, depth + 3
    if "classifier.1.weight" in tensors:
        asm.dense("classifier.1", x, 0, "output", depth + 1)
    asm.check_all_used(names, lambda n: n.endswith("num_batches_tracked"))
    return asm
