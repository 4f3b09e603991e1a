"""Recover the model forest: candidates, pair evidence, merges, a spanning forest, its roots.

1. **Candidates** (:func:`candidate_pairs`): per model, its ``CANDIDATES`` nearest models of the
   same architecture by invariant fingerprint (:func:`pipeline.search.duplicates.fingerprint`, in a
   faiss index), so the pair tests grow linearly with the zoo.
2. **Pair tests** (:func:`.evidence.pair_evidence` after alignment); pairs closer than
   ``RELATED`` are related.
3. **Merges**: a model within ``MERGE_TOL`` of a weighted average of two of its related neighbours
   is their merge (:func:`.evidence.merge_residual`); it gets both as parents.
4. **The forest**: the minimum spanning forest of the related pairs (networkx) by distance,
   discounted by exact structure (:func:`structural_weight`: frozen layers, low-rank updates), plus
   ``REBASED`` for a pair that had to be re-based to line up: a derivation keeps its parent's
   basis, a re-upload does not, which tells an original from its symmetry copies. Cast and pruned
   copies are leaves: their pairs with anything but their source cost ``AGAINST`` more.
5. **Directions**: each tree is rooted where the orientation costs of its edges
   (:func:`orientation_cost`) sum lowest: ``AGAINST`` where the evidence points the other way (a
   cast or a pruned copy is the child), ``GROWTH`` where a trained child would have less weight
   spread than its parent (:func:`weight_spread`: training adds spread, measured on the lineage zoo
   in 94 of 97 trained derivations; MoTHer's kurtosis was right in half of them). Merges get both
   parents.
6. **Re-hanging** (:func:`_reattach`): each full fine-tune hangs from the nearest earlier trained
   model of its tree that lies behind it.

Every step reads only weights; every test is invariant to the models' symmetries.
"""
from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np

from pipeline.graph.schema import WeightGraph
from pipeline.lineage.evidence import MERGE_CONTRAST, MERGE_TOL, edge_type, merge_residual, pair_evidence
from pipeline.rebasin.matching import match
from pipeline.rebasin.spec import same_architecture
from pipeline.search.duplicates import fingerprint
from pipeline.symmetry import apply, canonical_scaling

#: nearest models by fingerprint tested per model
CANDIDATES = 16
#: pairs farther apart (``1 - cosine`` after alignment) are unrelated
RELATED = 0.15
#: orientation costs: evidence against it, a trained child with less weight spread than its parent
AGAINST, GROWTH = 1.0, 0.1
#: added to the distance of a pair that needed re-basing: above float noise of symmetry copies (about
#: 1e-6), below the differences between real derivations
REBASED = 1e-4
#: a merge is looked for among this many nearest related neighbours of a model
MERGE_NEIGHBOURS = 4
#: derivations by training: their child continues from the parent's weights
TRAINED = ("finetune", "partial_finetune", "lora")
#: a model's parent is the nearest earlier one whose angle, between its own parent and the model,
#: has at most this cosine (see :func:`_reattach`)
BETWEEN_COS = 0.05


@dataclass
class Edge:
    parent: str
    child: str
    type: str
    confidence: float
    evidence: dict


def weight_spread(graph: WeightGraph) -> float:
    """Mean over weight matrices of ``mean |w|`` in the scale canonical form: exactly invariant to
    the model's symmetries; fine-tuning, LoRA and partial fine-tuning add to it."""
    tensors = apply(graph, canonical_scaling(graph))
    return float(np.mean([np.abs(np.asarray(t, np.float64)).mean() for t in tensors.values() if np.ndim(t) >= 2]))


def candidate_pairs(ids: list[str], graphs: dict[str, WeightGraph], k: int = CANDIDATES) -> list[tuple[str, str]]:
    """Unordered pairs ``(a, b)`` (``a < b``) of one architecture: each model with its ``k`` nearest
    by fingerprint (Euclidean between fingerprints scaled to unit norm; a faiss flat index per
    architecture, so no all-pairs matrix is held)."""
    import faiss

    groups: list[list[str]] = []
    for i in ids:
        group = next((g for g in groups if same_architecture(graphs[g[0]], graphs[i])), None)
        (group.append(i) if group is not None else groups.append([i]))
    pairs = set()
    for group in groups:
        prints = np.stack([fingerprint(graphs[i]) for i in group]).astype(np.float32)
        prints /= np.maximum(np.linalg.norm(prints, axis=1, keepdims=True), 1e-30)
        index = faiss.IndexFlatL2(prints.shape[1])
        index.add(prints)
        _, nearest = index.search(prints, min(k + 1, len(group)))
        for a, row in enumerate(nearest):
            pairs.update(tuple(sorted((group[a], group[int(b)]))) for b in row if b >= 0 and b != a)
    return sorted(pairs)


def structural_weight(evidence: dict) -> float:
    """A related pair's weight in the spanning forest: its distance, times the share of weight
    matrices that changed and the rank share of their changes. Exact structure (frozen layers, an
    update of low rank) marks a direct derivation, which siblings or cousins show less of."""
    return evidence["distance"] * (1.0 - evidence["unchanged_share"]) * evidence["rank_share"]


def orientation_cost(direction: float, spread_parent: float, spread_child: float) -> float:
    """What reading a related pair as parent -> child costs (see the module docstring);
    ``direction``: +1 where the evidence says this way, -1 the other way, 0 neither."""
    if direction:
        return AGAINST if direction < 0 else 0.0
    return GROWTH if spread_child < spread_parent else 0.0


def recover(graphs: dict[str, WeightGraph], evidence: dict[tuple[str, str], dict]) -> list[Edge]:
    """The forest from the pair ``evidence`` (``(a, b)`` -> :func:`.evidence.pair_evidence` of B
    aligned to A, for candidate pairs): parent -> child edges with type, confidence and evidence.

    The undirected forest is the minimum spanning forest of the related pairs by
    :func:`structural_weight` (plus ``REBASED`` for a pair that needed re-basing: of an original and
    its symmetry copies, the original keeps its relatives); merges join it through their parents.
    Each tree is then rooted where its edges' orientation costs (:func:`orientation_cost`) sum
    lowest, and its full fine-tunes re-hung (:func:`_reattach`)."""
    spread = {i: weight_spread(g) for i, g in graphs.items()}
    related = {pair: e for pair, e in evidence.items() if e["distance"] < RELATED}
    copies = _artefacts(related)
    neighbours: dict[str, list[tuple[bool, float, str]]] = {i: [] for i in graphs}
    for (a, b), e in related.items():  # merge candidates: no cast or pruned copies; unrebased first
        if b not in copies:
            neighbours[a].append((e["rebased"], e["distance"], b))
        if a not in copies:
            neighbours[b].append((e["rebased"], e["distance"], a))
    merges = _merges(graphs, neighbours)

    undirected = nx.Graph()
    undirected.add_nodes_from(graphs)
    for (a, b), e in related.items():
        if a in merges or b in merges:  # a merge joins the forest through its parents alone
            continue
        leaf = ((a in copies and copies[a] != b) or (b in copies and copies[b] != a)) and edge_type(e)[0] != "symmetry"
        undirected.add_edge(a, b, weight=structural_weight(e) + (REBASED if e["rebased"] else 0.0) + (AGAINST if leaf else 0.0))
    forest = nx.minimum_spanning_tree(undirected)
    typed = {}  # (parent, child) -> (type, cost of that orientation)
    for a, b in forest.edges():
        e = related[(a, b)] if (a, b) in related else related[(b, a)]
        a, b = (a, b) if (a, b) in related else (b, a)
        kind, direction = edge_type(e)
        typed[a, b] = (kind, orientation_cost(direction, spread[a], spread[b]), e)
        typed[b, a] = (kind, orientation_cost(-direction, spread[b], spread[a]), e)
    edges = []
    for component in nx.connected_components(forest):
        root = _best_root(forest.subgraph(component), typed)
        tree = []
        for parent, child in nx.bfs_edges(forest, root):
            kind, cost, e = typed[parent, child]
            tree.append(Edge(parent, child, kind, _confidence(e["distance"] + cost), e))
        edges += _reattach(root, tree, graphs, evidence)
    for child, ((first, second), residual) in merges.items():
        for parent in (first, second):
            e = evidence.get((parent, child)) or evidence.get((child, parent)) or {}
            edges.append(Edge(parent, child, "merge", float(1.0 - residual / MERGE_TOL),
                              {**e, "merge_residual": residual}))
    return edges


def _reattach(root: str, tree: list[Edge], graphs: dict[str, WeightGraph], evidence: dict) -> list[Edge]:
    """``tree`` (rooted at ``root``) with each fully fine-tuned model hung from the nearest earlier
    trained model that lies *behind* it. All members are aligned to the root's basis; "earlier" is
    nearer the root. Candidate ``p`` is behind ``v`` when, at ``p``, the angle between ``p``'s own
    parent and ``v`` is not acute (cosine at most ``BETWEEN_COS``): a child continues from its
    parent, while a sibling trained from the same parent shares its drift and sits to the side.
    LoRA and partial fine-tunes keep the parent their exact structure chose; copies (cast, pruned,
    symmetry) stay leaves and keep their source."""
    incoming = {e.child: e for e in tree}
    x = {v: _in_basis(graphs[root], graphs[v]) for v in [root, *incoming]}
    order = [root] + sorted(incoming, key=lambda v: float(np.linalg.norm(x[v] - x[root])))
    placed: list[str] = [root]
    for v in order[1:]:
        if incoming[v].type == "finetune":  # lora and partial edges rest on exact structure: kept
            nearest = sorted((p for p in placed if p == root or incoming[p].type in TRAINED),
                             key=lambda p: (-_equal_share(graphs[v], graphs[p]), float(np.linalg.norm(x[v] - x[p]))))
            parent = next((p for p in nearest if p == root or _between(x[incoming[p].parent], x[p], x[v])), None)
            if parent is not None and parent != incoming[v].parent:
                e = evidence.get((parent, v)) or evidence.get((v, parent)) or pair_evidence(graphs[parent], graphs[v])
                kind, _ = edge_type(e)
                incoming[v] = Edge(parent, v, kind if kind in TRAINED else incoming[v].type,
                                   _confidence(e["distance"]), e)
        placed.append(v)
    return list(incoming.values())


def _equal_share(a: WeightGraph, b: WeightGraph) -> float:
    """The share of weights exactly equal in two models as stored: a fine-tune leaves the weights
    it got no gradient for (dead units) as its parent had them, so its parent shares at least as
    many with it as any sibling or grandparent does."""
    same = sum(int((np.asarray(t) == np.asarray(b.tensors[n])).sum()) for n, t in a.tensors.items())
    return same / max(1, a.num_params)


def _in_basis(reference: WeightGraph, graph: WeightGraph) -> np.ndarray:
    """``graph``'s weights aligned to ``reference``'s basis, as one float64 vector."""
    tensors = graph.tensors if graph is reference else match(reference, graph).aligned
    return np.concatenate([np.asarray(tensors[n], np.float64).ravel() for n in reference.tensors])


def _between(before: np.ndarray, middle: np.ndarray, after: np.ndarray) -> bool:
    """Whether ``middle`` lies between ``before`` and ``after``: the angle at it is not acute."""
    a, b = before - middle, after - middle
    return float(a @ b) <= BETWEEN_COS * float(np.linalg.norm(a) * np.linalg.norm(b))


def _artefacts(related: dict[tuple[str, str], dict]) -> dict[str, str]:
    """Cast and pruned copies -> their source (the nearest that is no copy itself, where there is
    one): release artefacts, kept as leaves (a copy about as close to its source's relatives as the
    source is would otherwise take its place)."""
    sources: dict[str, list[tuple[float, str]]] = {}
    for (a, b), e in related.items():
        kind, direction = edge_type(e)
        if kind in ("cast", "prune") and direction:
            source, copy = (a, b) if direction > 0 else (b, a)
            sources.setdefault(copy, []).append((e["distance"], source))
    return {copy: min(found, key=lambda f: (f[1] in sources, f[0]))[1] for copy, found in sources.items()}


def _best_root(tree: nx.Graph, typed: dict) -> str:
    """The node whose rooting of ``tree`` costs least in orientation costs (ties: the first by
    name); by rerooting: moving the root across an edge flips that edge alone."""
    start = min(tree.nodes)
    cost = {start: sum(typed[p, c][1] for p, c in nx.bfs_edges(tree, start))}
    for parent, child in nx.bfs_edges(tree, start):
        cost[child] = cost[parent] - typed[parent, child][1] + typed[child, parent][1]
    return min(sorted(cost), key=lambda n: cost[n])


def _merges(graphs: dict[str, WeightGraph], neighbours: dict[str, list[tuple[bool, float, str]]]
            ) -> dict[str, tuple[tuple[str, str], float]]:
    """Models that are a weighted average of two of their nearest related neighbours (those in the
    child's basis first: a merge is made of models in one basis, not of their re-based copies):
    ``child -> ((first, second), residual)``."""
    found = {}
    for child, near in neighbours.items():
        near = [i for *_, i in sorted(near)[:MERGE_NEIGHBOURS]]
        best = None
        for x in range(len(near)):
            for y in range(x + 1, len(near)):
                residual, alpha, apart = merge_residual(graphs[child], graphs[near[x]], graphs[near[y]])
                if residual < MERGE_TOL and apart > MERGE_CONTRAST * residual and 0.0 < alpha < 1.0 \
                        and (best is None or residual < best[1]):
                    best = ((near[x], near[y]), residual)
        if best is not None:
            found[child] = best
    return found


def _confidence(cost: float) -> float:
    """In ``[0, 1]``: 1 for an exact symmetry copy, falling with the edge's distance and orientation
    cost against ``RELATED``."""
    return float(np.clip(1.0 - cost / (RELATED + GROWTH), 0.0, 1.0))


def evidence_for(graphs: dict[str, WeightGraph], pairs: list[tuple[str, str]]) -> dict[tuple[str, str], dict]:
    """:func:`.evidence.pair_evidence` of each pair, in this process (the job fans pairs out as Ray tasks)."""
    return {(a, b): pair_evidence(graphs[a], graphs[b]) for a, b in pairs}
