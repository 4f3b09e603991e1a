"""RegNet (X and Y) with Hugging Face parameter names (``regnet.embedder.embedder``,
``regnet.encoder.stages.S.layers.L.{shortcut, layer.0, layer.1, layer.2.attention, layer.3}``,
``classifier.1``; each convolution with a BatchNorm ``normalization``).

Graph: the image's channels feed the stem convolution, which starts the residual stream. Each layer:
a 1x1 convolution, a 3x3 convolution in ``g`` channel groups (``grouped``), for RegNetY a
squeeze-and-excitation gate, a 1x1 convolution; its output and the shortcut (a 1x1 convolution
where the width or stride changes, else the stream itself, through ``residual`` blocks) are added
into the next stream group, which the layers of a stage share (one permutation per stage). Whole
channel groups of the grouped convolution permute together, its output channels also within their
group; its input channels stay in place within their group (``head_dims="fixed"``: a subgroup of
the full symmetry, which would permute them too). BatchNorm follows every convolution: channels
permute, unscaled; the squeeze-and-excitation's reduce units (ReLU) also rescale. The last stream
feeds the classifier through the global average pool.
"""
from __future__ import annotations

import itertools

from pipeline.graph.builders.common import GraphAssembler, build_or_explain, hidden_symmetry, layer_indices

_PREFIX = "regnet."


def build_regnet(tensors, names: list[str], activation: str):
    """``(assembler, "cnn")``, ``None`` when the parameters are not RegNet's; raises
    :class:`~pipeline.graph.builders.common.LayoutMismatch` when they are but do not fit."""
    if f"{_PREFIX}embedder.embedder.convolution.weight" not in tensors:
        return None
    return build_or_explain("RegNet", _build, tensors, names, activation), "cnn"


def _build(tensors, names, activation: str):
    asm = GraphAssembler(tensors)
    streams = (f"stream{i}" for i in itertools.count(1))

    stem = tensors[asm.need(f"{_PREFIX}embedder.embedder.convolution.weight")]
    pixels = asm.group("pixels", stem.shape[1] if stem.ndim == 4 else 1, "input", 0)
    x = asm.hf_conv(f"{_PREFIX}embedder.embedder", pixels, 1, next(streams))
    depth = 1
    for s in layer_indices(names, f"{_PREFIX}encoder.stages."):
        for i in layer_indices(names, f"{_PREFIX}encoder.stages.{s}.layers."):
            L = f"{_PREFIX}encoder.stages.{s}.layers.{i}."
            grouped = tensors[asm.need(f"{L}layer.1.convolution.weight")]
            width = tensors[asm.need(f"{L}layer.0.convolution.weight")].shape[0]
            if grouped.ndim != 4 or width % grouped.shape[1]:
                raise ValueError(f"{L}layer.1: shape {list(grouped.shape)} is no grouped convolution of {width}")
            groups = width // grouped.shape[1]
            heads = dict(heads=groups, head_group=f"{L}groups", head_dims="fixed") if groups > 1 else {}
            h = asm.hf_conv(f"{L}layer.0", x, depth + 1, f"{L}in", **heads)
            h = asm.hf_conv(f"{L}layer.1", h, depth + 2, f"{L}out")
            if f"{L}layer.2.attention.0.weight" in tensors:
                h = asm.squeeze_excite(f"{L}layer.2.attention.0", f"{L}layer.2.attention.2", h, depth + 3,
                                       hidden_symmetry(activation, False))
            shortcut = f"{L}shortcut.convolution.weight" in tensors
            stream = next(streams) if shortcut else asm.groups[x].perm_group
            out = asm.hf_conv(f"{L}layer.3", h, depth + 5, stream)
            skip = asm.hf_conv(f"{L}shortcut", x, depth + 5, stream) if shortcut else x
            if not shortcut and asm.groups[out].size != asm.groups[x].size:
                raise ValueError(f"{L}: no shortcut from {asm.groups[x].size} to {asm.groups[out].size} channels")
            y = asm.group(f"{L}output", asm.groups[out].size, "stream", depth + 6, symmetry="perm", perm_group=stream)
            asm.edge(out, y, "residual", name=f"{L}residual")
            asm.edge(skip, y, "residual", name=f"{L}shortcut")
            x, depth = y, depth + 6
    if "classifier.1.weight" in tensors:
        asm.dense("classifier.1", x, 0, "output", depth + 1)
    asm.check_all_used(names, lambda n: n.endswith("num_batches_tracked"))
    return asm
