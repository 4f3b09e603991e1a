"""Canonical forms: a network through a trained autoencoder, written as an ordinary checkpoint of the
target architecture, with its reconstruction error."""
from __future__ import annotations

import itertools
from collections.abc import Iterable

import numpy as np
import torch

from pipeline.autoencoder.functional import functional_loss, outputs, probe_inputs, stack
from pipeline.autoencoder.model import Autoencoder
from pipeline.graph.schema import WeightGraph


@torch.no_grad()
def canonical_forms(model: Autoencoder, graphs: list[WeightGraph]) -> tuple[list[dict[str, np.ndarray]], list[float]]:
    """The canonical state dict of each graph (float32 arrays under the target's names) and its
    reconstruction error: the functional loss of the decoded network against the input at the
    target's *test* inputs (pixel MSE on the 32x32 grid for INRs; distillation KL for classifiers).
    Every graph must be of the target architecture (:meth:`TargetArchitecture.check`). Invariant: a
    graph and any element of its orbit give the same canonical form."""
    target = model.target
    x_test = probe_inputs(target)[1]
    _, decoded = model([model.prepare(g) for g in graphs])
    teacher = outputs(target, stack(target, [g.tensors for g in graphs]), x_test)
    student = outputs(target, target.unflatten(decoded), x_test)
    errors = [float(functional_loss(target, s[None], t[None])) for s, t in zip(student, teacher)]
    forms = [{name: t.numpy().copy() for name, t in target.unflatten(d).items()} for d in decoded]
    return forms, errors


def target_metadata(model: Autoencoder, autoencoder: str) -> dict[str, str]:
    """The safetensors metadata every checkpoint the autoencoder writes carries: what rebuilds its
    target architecture (``family``, ``activation``, ``arch``) and the ``autoencoder`` (its file)."""
    target = model.target
    return {"autoencoder": autoencoder, "family": target.family, "activation": target.activation,
            "arch": dict(target.spec)["arch"]}


def merge(forms: Iterable[dict[str, np.ndarray]], weights: Iterable[float] | None = None) -> dict[str, np.ndarray]:
    """Models merged in canonical space: the weighted mean (default: equal weights) of their
    canonical forms, accumulated one form at a time (``forms`` may be a stream). No assignment
    problem is solved: canonical forms already share one basis."""
    total: dict[str, np.ndarray] = {}
    mass = 0.0
    for form, w in zip(forms, itertools.repeat(1.0) if weights is None else weights):
        for name, t in form.items():
            total[name] = total.get(name, 0.0) + w * np.asarray(t, np.float64)
        mass += w
    if not mass:
        raise ValueError("nothing to merge")
    return {name: (t / mass).astype(np.float32) for name, t in total.items()}
