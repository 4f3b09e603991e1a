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
multiplied along all input-output paths, and the circuits of attention layers and residual branches)
must agree to within ``max_wiring_distance``, part by part. An uncoupled
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

from dataclasses import dataclass, field

import numpy as np

from pipeline.encoders import embed
from pipeline.encoders.executor import branch_spectra, linear_response, network_outputs
from pipeline.encoders.graph_input import GraphInput
from pipeline.encoders.prepare import graph_input, prepare, prepare_many
from pipeline.encoders.probes import ProbeInputs
from pipeline.graph.schema import WeightGraph
from pipeline.numerics import TINY, unit_rows
from pipeline.symmetry import CANDIDATE_SYMMETRIES, GroupElement, assuming, canonical_scaling


@dataclass(frozen=True)
class DuplicateThresholds:
    """When two models are near-duplicates: fingerprint distance at most ``max_distance`` (copies
    measure at most 1.5e-3 from their parents, the nearest distinct models 6.3e-3 or more),
    embedding cosine at least ``min_cosine``, wiring fingerprint distance at most
    ``max_wiring_distance`` (five fine-tuning steps move it by at most 0.093, a transformer's
    circuits; MLPs' 0.053), and, where both
    networks can be run, distance of their outputs at the probe inputs at most ``max_output_distance``
    (on the default zoo, found copies moved them by at most 0.068, broken copies by 0.078 or more,
    those under 0.1 failing the wiring check)."""
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


#: blocks whose smaller side is larger get the quantiles of their row and column norms instead of
#: their singular values (a full SVD of a 2048 x 5632 block takes seconds; norms are linear time)
MAX_SVD_SIDE = 1024
SPECTRUM_QUANTILES = 256


def block_spectrum(w: np.ndarray) -> np.ndarray:
    """Invariants of a matrix ``w [m, n]`` (float64) under row and column permutations and sign
    flips: its singular values, or above ``MAX_SVD_SIDE`` the ``SPECTRUM_QUANTILES`` quantiles of
    its row norms then of its column norms. The length depends only on the shape."""
    if min(w.shape) <= MAX_SVD_SIDE:
        return np.linalg.svd(w, compute_uv=False)
    levels = np.linspace(0.0, 1.0, SPECTRUM_QUANTILES)
    squares = np.square(w)
    return np.concatenate([np.quantile(np.sqrt(squares.sum(1)), levels), np.quantile(np.sqrt(squares.sum(0)), levels)])


def fingerprint(graph: WeightGraph, scaling: GroupElement | None = None) -> np.ndarray:
    """``[n]`` float32 fingerprint invariant to the graph's group: in the scale canonical form, the
    spectrum of every weight block (:func:`block_spectrum`), then each group's bias and normalization parameters
    sorted (their magnitudes sorted for sign-flip groups). ``n`` depends only on the architecture.
    ``scaling``: the graph's :func:`canonical_scaling` when the caller has it already. Block by
    block: one block's float64 copy is held at a time."""
    factors = (canonical_scaling(graph) if scaling is None else scaling).factors
    parts = []
    for b in graph.edge_blocks:
        if not b.tensor:
            continue
        w = graph.block_weights(b, np.float64)  # the scale canonical form: rows times q, columns over q
        if b.dst in factors:
            w = w * factors[b.dst][:, None, None]
        if b.src in factors:
            w = w / factors[b.src][None, :, None]
        parts.append(block_spectrum(w.reshape(len(w), -1)))
    for i, g in enumerate(graph.node_groups):  # node features sorted (permutations), by magnitude where signs flip
        for name in (g.bias, *g.norm):
            if name:
                values = np.asarray(graph.tensors[name], dtype=np.float64)
                values = values * factors[i] if name == g.bias and i in factors else values
                parts.append(np.sort(np.abs(values) if g.symmetry == "perm_sign" else values))
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)


def output_fingerprint(prepared: GraphInput, probes: ProbeInputs | None = None) -> np.ndarray:
    """``[n_out * NUM_PROBES]`` float32: the network's outputs at the probe inputs
    (:func:`pipeline.encoders.executor.network_outputs`), empty when it cannot be run. What the
    network computes, so exactly invariant to its whole group; ``probes``: the encoder's own."""
    outputs = network_outputs(prepared, probes)
    return np.zeros(0, np.float32) if outputs is None else outputs.numpy().ravel().astype(np.float32)


def wiring_fingerprint(graph: WeightGraph | GraphInput) -> list[np.ndarray]:
    """The network's wiring (:func:`pipeline.encoders.executor.linear_response`) in parts, float32:
    the outputs' linear response, output neuron by output neuron, then each circuit (attention
    layers' query-key circuits, residual branches against their skips), then each residual branch's
    singular values (:func:`pipeline.encoders.executor.branch_spectra`). Exactly invariant to
    hidden-neuron permutations, sign flips and positive scalings; an uncoupled permutation changes
    some part, of query or key units and inside residual branches too. Empty where it cannot be
    read (no inputs, or it overflows float64). ``graph``: a weight graph or, when the caller has
    it, its prepared input."""
    prepared = graph_input(graph) if isinstance(graph, WeightGraph) else graph
    outputs, circuits = linear_response(prepared)
    parts = ([np.concatenate([m.numpy().ravel() for m in outputs])] if outputs else []) + [
        c.numpy().ravel() for c in circuits + branch_spectra(prepared)]
    parts = [p.astype(np.float32) for p in parts]
    return parts if all(np.isfinite(p).all() for p in parts) else []  # overflowed: not a reading


def wiring_distance(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """The largest :func:`fingerprint_distance` of two wirings' parts (a change in any one part is a
    change of wiring, however large the others); ``inf`` for different architectures."""
    if len(a) != len(b):
        return float("inf")
    return max((fingerprint_distance(x, y) for x, y in zip(a, b)), default=0.0)


def fingerprint_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Relative distance ``||a - b|| / max(||a||, ||b||)``; ``inf`` for different architectures."""
    if a.shape != b.shape:
        return float("inf")
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a), np.linalg.norm(b), TINY))


def hidden_symmetry(graph: WeightGraph) -> str:
    """The group a graph's activation gives its hidden neurons (``perm``, ``perm_sign`` or
    ``perm_scale``; ``unknown`` where its activation is unknown and it has hidden neurons)."""
    symmetries = {g.symmetry for g in graph.node_groups if g.kind == "hidden" and not g.norm}
    if graph.activation == "unknown" and "perm" in symmetries and graph.mode == "computational":
        return "unknown"
    return next((s for s in ("perm_scale", "perm_sign") if s in symmetries), "perm")


@dataclass
class Prints:
    """What near-duplicate detection reads of one model: its embedding ``vector``, ``fingerprint``,
    ``wiring`` fingerprint and ``outputs`` at the probe inputs (empty: not run), the ``symmetry``
    of its hidden neurons (:func:`hidden_symmetry`), and for ``unknown`` ones, ``candidates``:
    candidate group -> ``(vector, fingerprint)`` with the graph annotated that way
    (:func:`pipeline.symmetry.assuming`)."""
    vector: np.ndarray
    fingerprint: np.ndarray
    wiring: list[np.ndarray]
    outputs: np.ndarray
    symmetry: str
    candidates: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def view(self, group: str) -> tuple[np.ndarray, np.ndarray] | None:
        """``(vector, fingerprint)`` under candidate ``group``, or ``None`` if the model's known
        activation gives it another group."""
        if self.symmetry == group or (self.symmetry == "unknown" and group == "perm"):
            return self.vector, self.fingerprint
        return self.candidates.get(group)


def candidate_views(graph: WeightGraph, encoder, probes: ProbeInputs | None = None
                    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """For a graph of unknown activation: each larger candidate group -> ``(embedding by
    ``encoder``, fingerprint)`` of the graph annotated that way (the ``Prints.candidates``)."""
    views = {}
    for group in CANDIDATE_SYMMETRIES[1:]:
        assumed = assuming(graph, group)
        scaling = canonical_scaling(assumed)
        vector = embed(encoder, [prepare(assumed, scaling=scaling, probes=probes)]).numpy()[0]
        views[group] = (vector.astype(np.float32), fingerprint(assumed, scaling))
    return views


def model_prints(graphs: list[WeightGraph], encoder, probes: ProbeInputs | None = None) -> list[Prints]:
    """Everything near-duplicate detection reads of each model, with ``encoder`` (and its
    ``probes``) as the embedding, embedded as one batch; each graph's canonical scaling is computed
    once for the encoder's input and the fingerprint."""
    scalings = [canonical_scaling(g) for g in graphs]
    prepared = prepare_many(graphs, scalings=scalings, probes=probes)
    vectors = embed(encoder, prepared).numpy().astype(np.float32)
    prints = []
    for graph, scaling, inputs, vector in zip(graphs, scalings, prepared, vectors):
        symmetry = hidden_symmetry(graph)
        prints.append(Prints(vector, fingerprint(graph, scaling), wiring_fingerprint(inputs),
                             output_fingerprint(inputs, probes), symmetry,
                             candidate_views(graph, encoder, probes) if symmetry == "unknown" else {}))
    return prints


def pair_evidence(a: Prints, b: Prints, group: str) -> dict:
    """What the checks measure on two models under candidate ``group``: embedding ``cosine``,
    fingerprint ``distance``, ``wiring_distance`` and ``output_distance`` (``None`` unless both
    networks were run), and the ``group``."""
    (va, fa), (vb, fb) = a.view(group), b.view(group)
    ua, ub = unit_rows(np.stack([va, vb]).astype(np.float64))
    both_run = a.outputs.size and b.outputs.size
    return {"cosine": float(ua @ ub),
            "distance": fingerprint_distance(fa, fb),
            "wiring_distance": wiring_distance(a.wiring, b.wiring),
            "output_distance": fingerprint_distance(a.outputs, b.outputs) if both_run else None,
            "group": group}


def near_duplicate_groups(ids: list[str], prints: list[Prints], thresholds: DuplicateThresholds = DuplicateThresholds(),
                          k: int = 10) -> list[dict]:
    """Groups of near-duplicates among ``ids`` (``prints``: each one's :class:`Prints`): connected
    components of the pairs :meth:`DuplicateThresholds.accept` accepts. Candidates are each model's
    ``k`` nearest neighbours by fingerprint among models of its architecture, under each candidate
    group in turn (smallest first; a model of known activation only under its own); a pair is
    reported under the first group it passes. Returns ``[{"members": [...], "pairs": [{"a", "b",
    **pair_evidence}]}]``, largest first."""
    import faiss

    parent = list(range(len(ids)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    pairs, seen = [], set()
    for group in CANDIDATE_SYMMETRIES:
        by_shape: dict[tuple, list[int]] = {}
        for i, p in enumerate(prints):
            view = p.view(group)
            if view is not None and view[1].size:
                by_shape.setdefault(view[1].shape, []).append(i)
        for members in by_shape.values():
            if len(members) < 2:
                continue
            matrix = np.ascontiguousarray(np.stack([prints[i].view(group)[1] for i in members]), dtype=np.float32)
            index = faiss.IndexFlatL2(matrix.shape[1])
            index.add(matrix)
            _, rows = index.search(matrix, min(k + 1, len(members)))
            for a, row in enumerate(rows):
                for b in row:
                    i, j = members[a], members[int(b)]
                    if b < 0 or j <= i or (i, j) in seen:
                        continue
                    evidence = pair_evidence(prints[i], prints[j], group)
                    if thresholds.accept(evidence):
                        seen.add((i, j))
                        pairs.append((i, j, evidence))
                        parent[root(i)] = root(j)
    groups: dict[int, dict] = {}
    for i, j, evidence in pairs:
        group = groups.setdefault(root(i), {"members": set(), "pairs": []})
        group["members"].update((ids[i], ids[j]))
        group["pairs"].append({"a": ids[i], "b": ids[j], **evidence})
    out = [{"members": sorted(g["members"]), "pairs": g["pairs"]} for g in groups.values()]
    return sorted(out, key=lambda g: (-len(g["members"]), g["members"]))


def duplicates_of(query: Prints, ids: list[str], prints: list[Prints],
                  thresholds: DuplicateThresholds = DuplicateThresholds(), k: int = 10) -> list[dict]:
    """The models among ``ids`` (``prints``: each one's :class:`Prints`) that are near-duplicates of
    a model not among them, given by its ``query`` prints: under each candidate group in turn, its
    ``k`` nearest neighbours by fingerprint among models of its architecture, accepted as
    :func:`near_duplicate_groups` accepts a pair. Returns ``[{"content_id", **pair_evidence}]``,
    nearest fingerprint first."""
    found: dict[int, dict] = {}
    for group in CANDIDATE_SYMMETRIES:
        view = query.view(group)
        if view is None or not view[1].size:
            continue
        members = [i for i, p in enumerate(prints)
                   if i not in found and p.view(group) is not None and p.view(group)[1].shape == view[1].shape]
        if not members:
            continue
        matrix = np.stack([prints[i].view(group)[1] for i in members]).astype(np.float64)
        distances = np.square(matrix - view[1].astype(np.float64)).sum(1)
        for row in np.argsort(distances)[:k]:
            evidence = pair_evidence(query, prints[members[row]], group)
            if thresholds.accept(evidence):
                found[members[row]] = evidence
    return sorted(({"content_id": ids[i], **e} for i, e in found.items()), key=lambda hit: hit["distance"])
