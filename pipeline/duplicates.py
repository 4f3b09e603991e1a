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
it as much as an independent training run moves the fingerprint. (Singular values of products of
consecutive blocks were tried first: for wide, barely trained layers their spectra hardly move
under a broken wiring.)
"""
from __future__ import annotations

import dataclasses

import numpy as np

from pipeline.graph.schema import WeightGraph, topological_order
from pipeline.symmetry import GroupElement, apply, canonical_scaling

TINY = 1e-30


def fingerprint(graph: WeightGraph, scaling: GroupElement | None = None) -> np.ndarray:
    """``[n]`` float32 invariant fingerprint (see the module docstring); ``n`` depends only on the
    architecture. ``scaling``: the graph's :func:`canonical_scaling` when the caller has it already."""
    graph = dataclasses.replace(graph, tensors=apply(graph, canonical_scaling(graph) if scaling is None else scaling))
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


MAX_RESPONSE_INPUTS = 4096  # wider input groups (token vocabularies) are left out of the response


def wiring_fingerprint(graph: WeightGraph) -> np.ndarray:
    """``[n_out * n_in + n_out]`` float32: the network's *linear response*, the weights multiplied
    along every path from the input groups (of at most ``MAX_RESPONSE_INPUTS`` nodes) to the outputs,
    activations left out, conv kernels summed, and the biases carried the same way. Hidden neurons
    are summed over, so it is exactly invariant to their permutations, sign flips and positive
    scalings (``q`` and ``1/q`` cancel along each path); an uncoupled permutation changes it."""
    inputs = [i for i, g in enumerate(graph.node_groups)
              if not any(b.dst == i for b in graph.edge_blocks) and g.size <= MAX_RESPONSE_INPUTS]
    offsets = np.cumsum([0] + [graph.node_groups[i].size for i in inputs])
    maps: dict[int, np.ndarray] = {}
    for k, i in enumerate(inputs):
        maps[i] = np.zeros((graph.node_groups[i].size, offsets[-1] + 1))
        maps[i][:, offsets[k]:offsets[k + 1]] = np.eye(graph.node_groups[i].size)
    for i in topological_order(len(graph.node_groups), graph.edge_blocks):
        incoming = [b for b in graph.edge_blocks if b.dst == i and b.src in maps]
        if i in maps or not incoming:
            continue
        m = np.zeros((graph.node_groups[i].size, offsets[-1] + 1))
        for b in incoming:
            if not b.tensor:
                m += maps[b.src]
                continue
            m += graph.block_weights(b, np.float64).sum(2) @ maps[b.src]
        if graph.node_groups[i].bias:
            m[:, -1] += np.asarray(graph.tensors[graph.node_groups[i].bias], dtype=np.float64)
        maps[i] = m
    parts = [maps[i].ravel() for i, g in enumerate(graph.node_groups) if g.kind == "output" and i in maps]
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)


def fingerprint_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Relative distance ``||a - b|| / max(||a||, ||b||)``; ``inf`` for different architectures."""
    if a.shape != b.shape:
        return float("inf")
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a), np.linalg.norm(b), TINY))


def near_duplicate_groups(ids: list[str], vectors: np.ndarray, fingerprints: list[np.ndarray],
                          wirings: list[np.ndarray], min_cosine: float = 0.9, max_distance: float = 5e-3,
                          max_wiring_distance: float = 0.3, k: int = 10) -> list[dict]:
    """Groups of near-duplicates among ``ids`` (``vectors [n, d]`` their embeddings; ``fingerprints``
    and ``wirings`` their fingerprints; ``k`` fingerprint neighbours are checked per model):
    connected components of the pairs that pass all three checks. Returns ``[{"members": [...], "pairs":
    [(a, b, cosine, distance)]}]``, largest first."""
    import faiss

    x = np.ascontiguousarray(vectors, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), TINY)
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
                d, cos = fingerprint_distance(fingerprints[i], fingerprints[j]), float(x[i] @ x[j])
                if d <= max_distance and cos >= min_cosine \
                        and fingerprint_distance(wirings[i], wirings[j]) <= max_wiring_distance:
                    pairs.append((i, j, cos, d))
                    parent[root(i)] = root(j)
    groups: dict[int, dict] = {}
    for i, j, s, d in pairs:
        group = groups.setdefault(root(i), {"members": set(), "pairs": []})
        group["members"].update((ids[i], ids[j]))
        group["pairs"].append((ids[i], ids[j], s, d))
    out = [{"members": sorted(g["members"]), "pairs": g["pairs"]} for g in groups.values()]
    return sorted(out, key=lambda g: (-len(g["members"]), g["members"]))
