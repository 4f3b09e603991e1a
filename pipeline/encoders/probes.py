"""Functional probes: what a network computes at fixed inputs, as features of its output neurons.

A network's outputs at given inputs are unchanged by every symmetry of its hidden neurons (coupled
permutations, positive scalings, sign flips), so they are exactly invariant features, and they
change with the function, e.g. under an uncoupled permutation. Networks with the same input width
share one fixed set of probe inputs, drawn from ``N(0, I)`` (the zoo's inputs are standardized).

Executed here: computational graphs of dense layers (MLPs, residual MLPs) without normalization, with
a known elementwise activation. Activation placement follows the builders: after every hidden group
and after a residual stream that no skip connection feeds (the stem's output). Other graphs
(convolutions, attention, sine networks whose frequency ``w0`` the weights do not record) get no
probe features.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch.nn import functional as F

from pipeline.graph.schema import NODE_KINDS

if TYPE_CHECKING:
    from pipeline.encoders.inputs import Block, Group

NUM_PROBES = 64
ACTIVATIONS = {"relu": F.relu, "tanh": torch.tanh, "gelu": F.gelu, "silu": F.silu, "sigmoid": torch.sigmoid,
               "elu": F.elu, "softplus": F.softplus}
_HIDDEN, _STREAM, _OUTPUT = (NODE_KINDS.index(k) for k in ("hidden", "stream", "output"))


def probe_inputs(width: int, count: int = NUM_PROBES) -> torch.Tensor:
    """``[count, width]`` float64 probe inputs, the same for every network of input ``width``."""
    generator = torch.Generator().manual_seed(7919 * width + count)
    return torch.randn(count, width, generator=generator, dtype=torch.float64)


def executable(groups: list["Group"], blocks: list["Block"], activation: str) -> bool:
    """Whether :func:`probe_outputs` can run this graph."""
    return (activation in ACTIVATIONS and all(g.norm is None for g in groups)
            and sum(g.kind == _OUTPUT for g in groups) == 1
            and all(b.kind == "residual" or (b.kind == "linear" and b.weight.shape[2] == 1) for b in blocks))


@torch.no_grad()
def probe_outputs(groups: list["Group"], blocks: list["Block"], order: list[int],
                  activation: str) -> torch.Tensor | None:
    """``[n_out, NUM_PROBES]``: each output neuron's values at the probe inputs (computed in float64,
    squashed by ``asinh`` so logits and regression outputs share a range), or ``None`` when the graph
    is not :func:`executable`. Invariant to every hidden-neuron symmetry of the network."""
    if not executable(groups, blocks, activation):
        return None
    act = ACTIVATIONS[activation]
    values: dict[int, torch.Tensor] = {}
    for i in order:
        incoming = [b for b in blocks if b.dst == i]
        g = groups[i]
        if not incoming:
            values[i] = probe_inputs(g.size)
            continue
        x = sum(values[b.src] if b.kind == "residual" else values[b.src] @ b.weight[:, :, 0].double().T
                for b in incoming)
        if g.bias is not None:
            x = x + g.bias.double()
        if g.kind == _HIDDEN or (g.kind == _STREAM and all(b.kind != "residual" for b in incoming)):
            x = act(x)
        values[i] = x
    output = next(i for i, g in enumerate(groups) if g.kind == _OUTPUT)
    return torch.asinh(values[output]).T.contiguous()
