"""Residual networks: a stem, residual blocks, a head.

Blocks are the modules under ``...blocks.N.`` / ``...layers.N.`` / ``layerK.N.`` (our residual MLPs
and torchvision-style ResNets). Each block's main path is a chain of layers; its skip path is the
identity (a ``residual`` edge block, the stream keeps one shared permutation) or a projection
(modules named ``downsample`` / ``shortcut`` / ``skip``: a skip group feeding the output through a
residual edge block; the stream after it gets a new permutation). The head is the modules named like
a classifier (``head``, ``fc``, ``classifier``, ``out``, ``output``, ``readout``); the rest is the stem.
"""
from __future__ import annotations

import re

from pipeline.graph.builders.common import GraphAssembler, Module, chain

_BLOCK = re.compile(r"^((?:.*\.)?(?:blocks|layers|layer\d+)\.\d+)\.(.+)$")
_SKIP = ("downsample", "shortcut", "skip")
_HEAD = ("head", "fc", "classifier", "out", "output", "readout", "final")


def build_residual(tensors, modules: list[Module], activation: str):
    """``(assembler, "resnet")`` or ``None`` when the modules are not a residual network we know."""
    blocks: dict[str, list[Module]] = {}
    stem, head = [], []
    for m in modules:
        match = _BLOCK.match(m.prefix + ".")
        if match:
            blocks.setdefault(match.group(1), []).append(m)
        elif m.prefix.split(".")[-1].rstrip("0123456789_") in _HEAD or m.prefix.split(".")[0] in _HEAD:
            head.append(m)
        else:
            stem.append(m)
    if not blocks or not stem or not head or stem[0].kind == "norm":
        return None

    asm = GraphAssembler(tensors)
    inputs = asm.group("input", tensors[stem[0].weight].shape[1], "input", 0)
    wired = chain(asm, stem, inputs, 0, activation, prefix="stem.")
    if wired is None:
        return None
    stream, layer = wired
    stream_id = 0
    asm.replace(stream, kind="stream", symmetry="perm", perm_group=f"stream{stream_id}")
    for key, members in blocks.items():
        main = [m for m in members if not any(s in m.prefix[len(key):] for s in _SKIP)]
        skip = [m for m in members if m not in main]
        if not main or main[0].kind == "norm":
            return None
        wired = chain(asm, main, stream, layer, activation, prefix=f"{key}.")
        if wired is None:
            return None
        out, layer = wired
        if skip:
            skip_wired = chain(asm, skip, stream, layer - 1, activation, prefix=f"{key}.skip.")
            if skip_wired is None or asm.groups[skip_wired[0]].size != asm.groups[out].size:
                return None
            stream_id += 1
            asm.replace(skip_wired[0], symmetry="perm", perm_group=f"stream{stream_id}")
            asm.edge(skip_wired[0], out, "residual", name=f"{key}.residual")
        elif asm.groups[out].size == asm.groups[stream].size:
            asm.edge(stream, out, "residual", name=f"{key}.residual")
        else:
            return None
        asm.replace(out, kind="stream", symmetry="perm", perm_group=f"stream{stream_id}")
        stream = out
    wired = chain(asm, head, stream, layer, activation, prefix="head.")
    if wired is None:
        return None
    asm.replace(wired[0], kind="output", symmetry="none")
    return asm, "resnet"
