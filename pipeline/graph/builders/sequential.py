"""Sequential networks: chains of linear and convolution layers with optional normalization.

Covers MLPs, SIRENs (``inr``: an MLP with sine activations) and Small-CNN-Zoo-style CNNs (convs,
then global average pooling or flattening, then dense layers). Layers are taken in natural name
order and must chain by shape.
"""
from __future__ import annotations

from pipeline.graph.builders.common import GraphAssembler, Module, chain


def build_sequential(tensors, modules: list[Module], activation: str, family_hint: str):
    """``(assembler, family)`` or ``None`` when the modules are not one chain of layers."""
    if modules[0].kind == "norm":
        return None
    asm = GraphAssembler(tensors)
    inputs = asm.group("input", tensors[modules[0].weight].shape[1], "input", 0)
    wired = chain(asm, modules, inputs, 0, activation)
    if wired is None:
        return None
    asm.replace(wired[0], kind="output", symmetry="none")
    if any(m.kind == "conv" for m in modules):
        family = "cnn"
    elif activation == "sine" or family_hint == "inr":
        family = "inr"
    else:
        family = "mlp"
    return asm, family
