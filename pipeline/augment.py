"""Training views of a model: symmetry-preserving augmentations (from :mod:`pipeline.symmetry`)
and DropConnect, as in the first seed."""
from __future__ import annotations

import dataclasses

import numpy as np

from pipeline.graph.schema import WeightGraph
from pipeline.symmetry import apply, random_element


def augment(graph: WeightGraph, rng: np.random.Generator, permute_fraction: float = 0.5,
            scale_range: tuple[float, float] = (0.5, 2.0), dropconnect: float = 0.05) -> WeightGraph:
    """A view of ``graph``: its hidden neurons permuted in about ``permute_fraction`` of the
    permutation groups, ReLU-family units rescaled by ``U(scale_range)`` (compensated in the next
    layer), tanh/sine units sign-flipped, then ``dropconnect`` of the edge weights zeroed (the only
    step that changes the function)."""
    element = random_element(graph, rng)
    element.perms = {k: p for k, p in element.perms.items() if rng.random() < permute_fraction}
    for i, q in element.factors.items():
        if graph.node_groups[i].symmetry == "perm_scale":
            element.factors[i] = rng.uniform(*scale_range, size=q.shape)
    tensors = apply(graph, element)
    if dropconnect > 0:
        for block in graph.edge_blocks:
            if block.tensor:
                t = tensors[block.tensor]
                tensors[block.tensor] = np.where(rng.random(t.shape) < dropconnect, 0, t).astype(t.dtype)
    return dataclasses.replace(graph, tensors=tensors)
