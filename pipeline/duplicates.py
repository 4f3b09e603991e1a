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

Known gap: that veto is weak. Of 239 held-out zoo models, each with a *broken* copy (one layer's rows
permuted without the next layer's columns: a different function), 123 copies pass both checks at
the defaults (measured with the trained scale_gmn). Singular values of products of consecutive
blocks see the wiring (broken copies move them by a median 0.07-0.2, fine-tuned copies by at most
0.023) and are the candidate for a third check.

Fingerprint of a weight graph, concatenated from:

* the singular values of every weight block (as a ``[dst, src * kernel]`` matrix) after the
  positively scalable groups (ReLU family) are put in scale canonical form
  (:func:`pipeline.symmetry.canonical_scaling`: incoming rows and bias of each unit of unit norm, the
  next layer's columns compensating): invariant to permutations and sign flips of rows and columns;
* the sorted absolute values of every bias and normalization vector.

It is invariant to every annotated symmetry and moves continuously with the weights. It is blind to
an uncoupled permutation (each block keeps its singular values): the wiring-aware embedding of the
first stage sees those. (Measured and not used: the network's linear response, weights multiplied
along all input-output paths, and singular values of products of consecutive blocks; both see the
wiring but move under a few fine-tuning steps about as much as between independent training runs.)
"""
from __future__ import annotations

import dataclasses

import numpy as np

from pipeline.graph.schema import WeightGraph
from pipeline.symmetry import apply, canonical_scaling

TINY = 1e-30


def fingerprint(graph: WeightGraph) -> np.ndarray:
    """``[n]`` float32 invariant fingerprint (see the module docstring); ``n`` depends only on the
    architecture."""
    graph = dataclasses.replace(graph, tensors=apply(graph, canonical_scaling(graph)))
    parts = []
    for b in graph.edge_blocks:
        if not b.tensor:
            continue
        w = np.asarray(graph.tensors[b.tensor], dtype=np.float64)
        dst, _, _ = graph.block_shape(b)
        matrix = w.T if b.kind == "embedding" else w.reshape(dst, -1)
        parts.append(np.linalg.svd(matrix, compute_uv=False))
    for g in graph.node_groups:
        for name in (g.bias, *g.norm):
            if name:
                parts.append(np.sort(np.abs(np.asarray(graph.tensors[name], dtype=np.float64))))
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)


def fingerprint_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Relative distance ``||a - b|| / max(||a||, ||b||)``; ``inf`` for different architectures."""
    if a.shape != b.shape:
        return float("inf")
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a), np.linalg.norm(b), TINY))


def near_duplicate_groups(ids: list[str], vectors: np.ndarray, fingerprints: list[np.ndarray],
                          min_cosine: float = 0.9, max_distance: float = 5e-3, k: int = 10) -> list[dict]:
    """Groups of near-duplicates among ``ids`` (``vectors [n, d]`` their embeddings, ``fingerprints``
    theirs; ``k`` fingerprint neighbours are checked per model): connected components of the pairs. Returns ``[{"members": [...], "pairs":
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
                i, j = members[a], members[int(b)]
                if b < 0 or j <= i:
                    continue
                d, cos = fingerprint_distance(fingerprints[i], fingerprints[j]), float(x[i] @ x[j])
                if d <= max_distance and cos >= min_cosine:
                    pairs.append((i, j, cos, d))
                    parent[root(i)] = root(j)
    groups: dict[int, dict] = {}
    for i, j, s, d in pairs:
        group = groups.setdefault(root(i), {"members": set(), "pairs": []})
        group["members"].update((ids[i], ids[j]))
        group["pairs"].append((ids[i], ids[j], s, d))
    out = [{"members": sorted(g["members"]), "pairs": g["pairs"]} for g in groups.values()]
    return sorted(out, key=lambda g: (-len(g["members"]), g["members"]))
