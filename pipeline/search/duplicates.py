"""Near-duplicates: groups of models that compute the same function up to the symmetries (permuted,
rescaled, sign-flipped or lightly fine-tuned copies).

A pair is a near-duplicate when a symmetry-invariant *fingerprint* of the weights agrees to within
``max_distance`` (relative) and their embeddings to within ``min_cosine``. Candidates are the
fingerprints' nearest neighbours among models of the same architecture (faiss, exact): embeddings
trained for retrieval pull every model of a task together (a crowd in which a copy need not be among
its parent's nearest neighbours), while the fingerprint, which sees the weights themselves, puts a
copy next to its parent and independently trained models (other seeds of the same setting) apart.
The embedding check then vetoes pairs the fingerprint cannot tell apart but the wiring-aware
encoder can (an uncoupled permutation keeps every block's singular values).

A third check sees the wiring: the *wiring fingerprint* (the network's linear response, weights
multiplied along all input-output paths) must agree to within ``max_wiring_distance``. An uncoupled
permutation (one layer's rows permuted without the next layer's columns: a different function) keeps
every block's singular values but scrambles the paths. It is a separate, looser check, not part of
the fingerprint: products along paths amplify small weight changes, so a few fine-tuning steps move
it as much as an independent training run moves the fingerprint.

A near-duplicate verdict is a claim that two checkpoints compute the same function, and users delete
files on it: where the network executor can run both networks, a fourth check compares what they
compute, their outputs at the probe inputs (:func:`output_fingerprint`), which no symmetry changes
and every other change does.

The thresholds are :class:`DuplicateThresholds`, the one place that holds them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.encoders.executor import linear_response, network_outputs
from pipeline.encoders.graph_input import GraphInput
from pipeline.encoders.prepare import graph_input
from pipeline.encoders.probes import ProbeInputs
from pipeline.graph.schema import WeightGraph
from pipeline.numerics import TINY, unit_rows
from pipeline.symmetry import GroupElement, canonical_scaling, transformed


@dataclass(frozen=True)
class DuplicateThresholds:
    """When two models are near-duplicates: fingerprint distance at most ``max_distance`` (copies
    measure at most 1.5e-3 from their parents, the nearest distinct models 6.3e-3 or more),
    embedding cosine at least ``min_cosine``, wiring fingerprint distance at most
    ``max_wiring_distance`` (five fine-tuning steps move it by at most 0.05), and, where both
    networks can be run, distance of their outputs at the probe inputs at most ``max_output_distance``."""
    min_cosine: float = 0.9
    max_distance: float = 5e-3
    max_wiring_distance: float = 0.3
    max_output_distance: float = 0.1

    def accept(self, evidence: dict) -> bool:
        """Whether a pair's :func:`pair_evidence` makes it a near-duplicate (the output check applies
        where both networks could be run)."""
        return (evidence["distance"] <= self.max_distance and evidence["cosine"] >= self.min_cosine
                and evidence["wiring_distance"] <= self.max_wiring_distance
                and (evidence["output_distance"] is None or evidence["output_distance"] <= self.max_output_distance))


def fingerprint(graph: WeightGraph, scaling: GroupElement | None = None) -> np.ndarray:
    """``[n]`` float32 invariant fingerprint (see the module docstring); ``n`` depends only on the
    architecture. ``scaling``: the graph's :func:`canonical_scaling` when the caller has it already."""
    graph = transformed(graph, canonical_scaling(graph) if scaling is None else scaling)
    parts = []
    for b in graph.edge_blocks:
        if not b.tensor:
            continue
        w = graph.block_weights(b, np.float64)
        parts.append(np.linalg.svd(w.reshape(len(w), -1), compute_uv=False))
    for g in graph.node_groups:
        for name in (g.bias, *g.norm):
            if name:
                parts.append(np.sort(np.abs(np.asarray(graph.tensors[name], dtype=np.float64))))
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)


def output_fingerprint(prepared: GraphInput, probes: ProbeInputs | None = None) -> np.ndarray:
    """``[n_out * NUM_PROBES]`` float32: the network's outputs at the probe inputs
    (:func:`pipeline.encoders.executor.network_outputs`), empty when it cannot be run. What the
    network computes, so exactly invariant to its whole group; ``probes``: the encoder's own."""
    outputs = network_outputs(prepared, probes)
    return np.zeros(0, np.float32) if outputs is None else outputs.numpy().ravel().astype(np.float32)


def wiring_fingerprint(graph: WeightGraph | GraphInput) -> np.ndarray:
    """``[n_out * (n_in + 1)]`` float32: the network's linear response
    (:func:`pipeline.encoders.executor.linear_response`), output neuron by output neuron. Exactly
    invariant to hidden-neuron permutations, sign flips and positive scalings; an uncoupled
    permutation changes it. ``graph``: a weight graph or, when the caller has it, its prepared input."""
    prepared = graph_input(graph) if isinstance(graph, WeightGraph) else graph
    parts = [m.numpy().ravel() for m in linear_response(prepared)]
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)


def fingerprint_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Relative distance ``||a - b|| / max(||a||, ||b||)``; ``inf`` for different architectures."""
    if a.shape != b.shape:
        return float("inf")
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a), np.linalg.norm(b), TINY))


def pair_evidence(i: int, j: int, unit_vectors: np.ndarray, fingerprints: list[np.ndarray],
                  wirings: list[np.ndarray], outputs: list[np.ndarray] | None = None) -> dict:
    """What the checks measure on models ``i`` and ``j``: embedding ``cosine`` (of ``unit_vectors``),
    fingerprint ``distance``, ``wiring_distance`` and ``output_distance`` (``None`` unless both
    networks could be run)."""
    both_run = outputs is not None and outputs[i].size and outputs[j].size
    return {"cosine": float(unit_vectors[i] @ unit_vectors[j]),
            "distance": fingerprint_distance(fingerprints[i], fingerprints[j]),
            "wiring_distance": fingerprint_distance(wirings[i], wirings[j]),
            "output_distance": fingerprint_distance(outputs[i], outputs[j]) if both_run else None}


def near_duplicate_groups(ids: list[str], vectors: np.ndarray, fingerprints: list[np.ndarray],
                          wirings: list[np.ndarray], outputs: list[np.ndarray] | None = None,
                          thresholds: DuplicateThresholds = DuplicateThresholds(), k: int = 10) -> list[dict]:
    """Groups of near-duplicates among ``ids`` (``vectors [n, d]`` their embeddings; ``fingerprints``,
    ``wirings`` and ``outputs`` their fingerprints and outputs at the probe inputs, an empty array
    where a network could not be run; ``k`` fingerprint neighbours are checked per model): connected
    components of the pairs :meth:`DuplicateThresholds.accept` accepts. Returns ``[{"members": [...],
    "pairs": [{"a", "b", **pair_evidence}]}]``, largest first."""
    import faiss

    x = unit_rows(np.asarray(vectors, dtype=np.float64))
    parent = list(range(len(ids)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    by_shape: dict[tuple, list[int]] = {}
    for i, f in enumerate(fingerprints):
        by_shape.setdefault(f.shape, []).append(i)
    pairs = []
    for members in by_shape.values():
        if len(members) < 2 or not fingerprints[members[0]].size:
            continue
        prints = np.ascontiguousarray(np.stack([fingerprints[i] for i in members]), dtype=np.float32)
        index = faiss.IndexFlatL2(prints.shape[1])
        index.add(prints)
        _, rows = index.search(prints, min(k + 1, len(members)))
        for a, row in enumerate(rows):
            for b in row:
                if b < 0 or members[int(b)] <= members[a]:
                    continue
                i, j = members[a], members[int(b)]
                evidence = pair_evidence(i, j, x, fingerprints, wirings, outputs)
                if thresholds.accept(evidence):
                    pairs.append((i, j, evidence))
                    parent[root(i)] = root(j)
    groups: dict[int, dict] = {}
    for i, j, evidence in pairs:
        group = groups.setdefault(root(i), {"members": set(), "pairs": []})
        group["members"].update((ids[i], ids[j]))
        group["pairs"].append({"a": ids[i], "b": ids[j], **evidence})
    out = [{"members": sorted(g["members"]), "pairs": g["pairs"]} for g in groups.values()]
    return sorted(out, key=lambda g: (-len(g["members"]), g["members"]))
