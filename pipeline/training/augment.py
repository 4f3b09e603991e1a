"""Training views of a model: symmetry-preserving augmentations (from :mod:`pipeline.symmetry`)
and DropConnect (Schürholt et al., 2021), and adversarial hard negatives."""
from __future__ import annotations

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
    return graph.with_tensors(tensors)


def rebuildable(spec: dict) -> bool:
    """Whether :func:`adversarial` can rebuild a model from its catalog row (zoo members only)."""
    from pipeline.zoo.tasks import TASKS

    if spec.get("family") == "inr":
        return spec.get("image_index") is not None and spec["image_index"] >= 0
    return spec.get("task") in TASKS and bool(spec.get("arch"))


def adversarial(graph: WeightGraph, spec: dict, rng: np.random.Generator, epsilon: float = 0.05,
                examples: int = 256) -> WeightGraph:
    """A hard negative: FGSM on the model's own task loss. Every parameter moves by ``epsilon``
    times its tensor's standard deviation in the sign of the loss gradient, giving a nearby model
    that computes something worse. ``spec``: the model's zoo catalog row (family, arch, activation,
    dropout, task, image_index)."""
    import torch

    from pipeline.zoo.train import rebuild_model

    model, data = rebuild_model(spec, graph.tensors)
    pick = torch.from_numpy(rng.choice(len(data.x_train), min(examples, len(data.x_train)), replace=False))
    params = dict(model.named_parameters())
    loss = data.loss(model(data.x_train[pick]), data.y_train[pick])
    grads = torch.autograd.grad(loss, list(params.values()))
    tensors = dict(graph.tensors)
    with torch.no_grad():
        for (name, p), g in zip(params.items(), grads):
            moved = p + epsilon * p.std(unbiased=False) * g.sign()
            tensors[name] = moved.numpy().astype(graph.tensors[name].dtype)
    return graph.with_tensors(tensors)
