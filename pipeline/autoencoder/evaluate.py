"""Measuring a canonicalization autoencoder (the second seed's experiments, and merging beyond them).

* :func:`reconstruction`: held-out models against their decoded canonical networks: INR pixel MSE on
  their images' pixel grid and on the finer 32x32 grid (with its floor); classifiers' L1
  accuracy error and the Kendall tau between input and decoded accuracies on the task's test split.
* :func:`orbit_spread`: how far a model's orbit is from collapsing (latents and decoded weights).
* :func:`interpolation`: loss and metric along naive, re-basin, autoencoder and latent paths, and
  their barriers (:class:`pipeline.rebasin.interpolate.Path`, the one barrier definition).
* :func:`merged_accuracy`: ``k`` same-task classifiers merged by averaging canonical forms, against
  re-basin to one anchor then averaging.
* :func:`rates`: canonicalizations per second against re-basin alignments per second.
"""
from __future__ import annotations

import time

import numpy as np
import torch
from scipy.stats import kendalltau

from pipeline.autoencoder.canonical import canonical_forms, merge
from pipeline.autoencoder.functional import outputs, probe_inputs, stack
from pipeline.autoencoder.model import Autoencoder
from pipeline.graph.schema import WeightGraph
from pipeline.rebasin import match
from pipeline.rebasin.interpolate import ALPHAS, Path, ZooEvaluator, interpolate
from pipeline.symmetry import random_element, transformed


def reconstruction(model: Autoencoder, graphs: list[WeightGraph], rows: list[dict]) -> dict:
    """Reconstruction figures of held-out models (``rows``: their catalog rows; classifiers' given
    and decoded accuracies are both measured here, on the task's test split). INRs: ``pixel_mse``
    on the pixel grid of their images (16x16, which they fit: the seed's measure), ``pixel_mse_32``
    between the pixels too (the 32x32 grid) and ``floor_mse_32``, each INR's own error there against
    its image upsampled."""
    forms, errors = canonical_forms(model, graphs)
    target = model.target
    if target.family == "inr":  # errors: pixel MSE on the 32x32 grid; PSNR of values in [-1, 1]
        grid = probe_inputs(target)[0]
        with torch.no_grad():
            given, decoded = (outputs(target, stack(target, t), grid) for t in ([g.tensors for g in graphs], forms))
        floor = [4.0 / 10 ** (r["test_metric"] / 10) for r in rows]
        return {"pixel_mse": float(((given - decoded) ** 2).mean()), "pixel_mse_32": float(np.mean(errors)),
                "floor_mse_32": float(np.mean(floor)), "models": len(graphs)}
    given = np.array([ZooEvaluator(r, g.tensors)(g.tensors)[1] for r, g in zip(rows, graphs)])
    decoded = np.array([ZooEvaluator(r, f)(f)[1] for r, f in zip(rows, forms)])
    return {"l1_error": float(np.mean(np.abs(given - decoded))), "kendall_tau": float(kendalltau(given, decoded)[0]),
            "distillation_loss": float(np.mean(errors)), "models": len(graphs)}


@torch.no_grad()
def latent_vectors(model: Autoencoder, graphs: list[WeightGraph]) -> np.ndarray:
    """``[len(graphs), d]`` latents."""
    return model([model.prepare(g) for g in graphs])[0].numpy()


@torch.no_grad()
def orbit_spread(model: Autoencoder, graph: WeightGraph, count: int, rng: np.random.Generator
                 ) -> tuple[float, np.ndarray]:
    """``(largest relative difference, latents [count + 1, d])``: of the latents and decoded weights of
    ``count`` random group elements of ``graph`` against the graph's own."""
    members = [graph] + [transformed(graph, random_element(graph, rng)) for _ in range(count)]
    z, decoded = model([model.prepare(g) for g in members])
    spread = max((float((x[1:] - x[0]).abs().max() / x[0].abs().max().clamp_min(1e-12)) for x in (z, decoded)),
                 default=0.0) if count else 0.0
    return spread, z.numpy()


def interpolation(models: dict[str, Autoencoder], graph_a: WeightGraph, graph_b: WeightGraph, row: dict,
                  alphas: np.ndarray = ALPHAS) -> dict[str, Path]:
    """Paths from A to B (``row``: A's catalog row, whose task and image evaluate them): ``naive``,
    ``rebasin`` (B aligned to A, signs and scales included; B keeps its own per-neuron ReLU scales, as
    ``jobs/rebasin.py`` does by default), per autoencoder ``name``: ``name``
    (both decoded, their canonical weights interpolated) and ``name latent`` (networks decoded along
    the line between the two latents)."""
    evaluate = ZooEvaluator(row, graph_a.tensors)
    paths = {"naive": evaluate.path(graph_a.tensors, graph_b.tensors, alphas),
             "rebasin": evaluate.path(graph_a.tensors, match(graph_a, graph_b, rescale=False).aligned, alphas)}
    for name, model in models.items():
        (form_a, form_b), _ = canonical_forms(model, [graph_a, graph_b])
        paths[name] = evaluate.path(form_a, form_b, alphas)
        with torch.no_grad():
            z, _ = model([model.prepare(g) for g in (graph_a, graph_b)])
            line = torch.stack([(1 - a) * z[0] + a * z[1] for a in alphas]).float()
            decoded = model.decoder(line)
        paths[f"{name} latent"] = evaluate.along(
            [{n: t.numpy() for n, t in model.target.unflatten(d).items()} for d in decoded], alphas)
    return paths


def merged_accuracy(model: Autoencoder, graphs: list[WeightGraph], rows: list[dict]) -> dict:
    """Metric of the ``k = len(graphs)`` same-task models merged by averaging their canonical forms
    (``ae``), by aligning all to the first with re-basin (each keeping its ReLU scales) and averaging
    (``rebasin``), and the mean
    metric of the parents, on the task's test split."""
    evaluate = ZooEvaluator(rows[0], graphs[0].tensors)
    forms, _ = canonical_forms(model, graphs)
    aligned = [graphs[0].tensors] + [match(graphs[0], g, rescale=False).aligned for g in graphs[1:]]
    average = aligned[0]
    for i, tensors in enumerate(aligned[1:], start=2):  # running mean: average of the first i models
        average = interpolate(average, tensors, 1.0 / i)
    return {"ae": evaluate(merge(forms))[1], "rebasin": evaluate(average)[1],
            "parents": float(np.mean([evaluate(g.tensors)[1] for g in graphs]))}


def rates(model: Autoencoder, graphs: list[WeightGraph]) -> dict:
    """Canonicalizations per second (one batch) and re-basin alignments per second (each graph
    to the first), on the same models."""
    started = time.perf_counter()
    canonical_forms(model, graphs)
    canonical = len(graphs) / (time.perf_counter() - started)
    started = time.perf_counter()
    for g in graphs[1:]:
        match(graphs[0], g)
    return {"canonicalize_per_s": canonical, "rebasin_align_per_s": (len(graphs) - 1) / (time.perf_counter() - started)}
