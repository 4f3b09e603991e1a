"""Recover the model forest: candidates, pair evidence, merges, a spanning forest, its roots.

1. **Candidates** (:func:`candidate_pairs`): per model, its ``CANDIDATES`` nearest models of the
   same architecture by invariant fingerprint (:func:`pipeline.search.duplicates.fingerprint`, in a
   faiss index), so the pair tests grow linearly with the zoo. The models of a small group of
   related models (``FRAGMENT``) get their ``WIDER_CANDIDATES`` nearest: with many models of one
   architecture, a branch's link to the rest of its tree can be crowded out of its first neighbours.
2. **Pair tests** (:func:`.evidence.pair_evidence` after alignment); pairs closer than
   ``RELATED`` are related.
3. **Merges**: a model within ``MERGE_TOL`` of a weighted average of two of its related neighbours
   is their merge (:func:`.evidence.merge_residual`); it gets both as parents.
4. **The forest**: the minimum spanning forest of the related pairs (networkx) by distance,
   discounted by exact structure (:func:`structural_weight`: frozen layers, low-rank updates), plus
   ``REBASED`` for a pair that had to be re-based to line up: a derivation keeps its parent's
   basis, a re-upload does not, which tells an original from its symmetry copies. Cast and pruned
   copies are leaves: their pairs with anything but their source cost ``AGAINST`` more. Merges are
   left out: each sits between its parents and their parent, nearer to all three than they are to
   one another.
5. **Directions**: each tree is rooted where the orientation costs of its edges
   (:func:`orientation_cost`) sum lowest: ``AGAINST`` where the evidence points the other way (a
   cast or a pruned copy is the child), ``GROWTH`` where a trained child would have less weight
   spread than its parent (:func:`weight_spread`: training adds spread, measured on the lineage zoo
   in 94 of 97 trained derivations; MoTHer's kurtosis was right in half of them). Then each merge
   joins under both its parents, and the models its pairs span more cheaply move under it
   (:func:`_hang_merges`).
6. **Re-hanging** (:func:`_reattach`): each full fine-tune hangs from the earlier trained or
   merged model of its tree that shares most of its exactly unchanged weights, then is nearest by
   a single optimizer run (:func:`update_flatness`).

Every step reads only weights; every test is invariant to the models' symmetries.
"""
from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np

from pipeline.graph.schema import WeightGraph
from pipeline.lineage.evidence import MERGE_CONTRAST, MERGE_TOL, SAME_FUNCTION, edge_type, merge_residual, pair_evidence
from pipeline.rebasin.matching import match
from pipeline.rebasin.spec import same_architecture
from pipeline.search.duplicates import fingerprint
from pipeline.symmetry import apply, canonical_scaling

#: nearest models by fingerprint tested per model, and for the models of a group of related models
#: no larger than ``FRAGMENT`` (a model alone, or a branch its tree's other models were crowded out of)
CANDIDATES, WIDER_CANDIDATES, FRAGMENT = 16, 64, 8
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
#: weight of an update's flatness in choosing a fine-tune's parent (:func:`_parent_cost`)
FLATNESS_POWER = 4


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


def candidate_pairs(ids: list[str], graphs: dict[str, WeightGraph], k: int = CANDIDATES,
                    query: set[str] | None = None) -> list[tuple[str, str]]:
    """Unordered pairs ``(a, b)`` (``a < b``) of one architecture: each model (of ``query``, default
    all) with its ``k`` nearest by fingerprint (Euclidean between fingerprints scaled to unit norm;
    a faiss flat index per architecture, so no all-pairs matrix is held)."""
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
        asked = [a for a, i in enumerate(group) if query is None or i in query]
        if not asked:
            continue
        _, nearest = index.search(prints[asked], min(k + 1, len(group)))
        for a, row in zip(asked, nearest):
            pairs.update(tuple(sorted((group[a], group[int(b)]))) for b in row if b >= 0 and b != a)
    return sorted(pairs)


def structural_weight(evidence: dict) -> float:
    """A related pair's weight in the spanning forest: its distance, times the share of weight
    matrices that changed and the rank share of their changes, plus for a cast the rounding it
    makes, at least ``SAME_FUNCTION`` (above float noise). Exact structure (frozen layers, an update
    of low rank, one number format) marks a direct derivation, which siblings or cousins show less
    of: a symmetry copy of a cast is nearer the cast than the cast's source, also when a rescaling
    left it in another format (a rescaled int8 model is off the int8 grid)."""
    cast = max(evidence["rounding"], SAME_FUNCTION) if edge_type(evidence)[0] == "cast" else 0.0
    return evidence["distance"] * (1.0 - evidence["unchanged_share"]) * evidence["rank_share"] + cast


def orientation_cost(kind: str, direction: float, spread_parent: float, spread_child: float) -> float:
    """What reading a related pair of derivation type ``kind`` as parent -> child costs (see the
    module docstring); ``direction``: +1 where the evidence says this way, -1 the other way, 0
    neither. Only trained derivations add spread: a symmetry copy has its source's exactly."""
    if direction:
        return AGAINST if direction < 0 else 0.0
    return GROWTH if kind in TRAINED and spread_child < spread_parent else 0.0


def recover(graphs: dict[str, WeightGraph], evidence: dict[tuple[str, str], dict]) -> list[Edge]:
    """The forest from the pair ``evidence`` (``(a, b)`` -> :func:`.evidence.pair_evidence` of B
    aligned to A, for candidate pairs): parent -> child edges with type, confidence and evidence.

    The undirected forest is the minimum spanning forest of the related pairs by
    :func:`structural_weight` (plus ``REBASED`` for a pair that needed re-basing: of an original and
    its symmetry copies, the original keeps its relatives), without merges. Each tree is then
    rooted where its edges' orientation costs (:func:`orientation_cost`) sum lowest, merges join
    under their parents (:func:`_hang_merges`), and full fine-tunes are re-hung (:func:`_reattach`)."""
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

    def weight(a: str, b: str, e: dict) -> float:
        leaf = ((a in copies and copies[a] != b) or (b in copies and copies[b] != a)) and edge_type(e)[0] != "symmetry"
        return structural_weight(e) + (REBASED if e["rebased"] else 0.0) + (AGAINST if leaf else 0.0)

    def oriented(parent: str, child: str) -> Edge:
        e = related[parent, child] if (parent, child) in related else related[child, parent]
        cost = orientation_cost(*_direction(related, parent, child), spread[parent], spread[child])
        return Edge(parent, child, _direction(related, parent, child)[0], _confidence(e["distance"] + cost), e)

    undirected = nx.Graph()
    undirected.add_nodes_from(i for i in graphs if i not in merges)
    undirected.add_weighted_edges_from((a, b, weight(a, b, e)) for (a, b), e in related.items()
                                       if a not in merges and b not in merges)  # merges join below
    forest = nx.minimum_spanning_tree(undirected)
    costs = {(p, c): orientation_cost(*_direction(related, p, c), spread[p], spread[c])
             for a, b in forest.edges() for p, c in ((a, b), (b, a))}
    incoming: dict[str, Edge] = {}
    for component in nx.connected_components(forest):
        root = _best_root(forest.subgraph(component), costs)
        incoming.update((child, oriented(parent, child)) for parent, child in nx.bfs_edges(forest, root))
    _hang_merges(incoming, merges, related, weight, oriented, evidence)
    trees: dict[str, list[Edge]] = {}
    for child, edge in incoming.items():
        trees.setdefault(_root_of(child, incoming), []).append(edge)
    edges = [e for root, tree in trees.items() for e in _reattach(root, tree, graphs, evidence, merges)]
    return [Edge(parent, e.child, e.type, e.confidence, e.evidence) for e in edges
            for parent in (merges[e.child][0] if e.type == "merge" else [e.parent])]


def _direction(related: dict, parent: str, child: str) -> tuple[str, float]:
    """:func:`.evidence.edge_type` of a related pair read as ``parent -> child``."""
    if (parent, child) in related:
        return edge_type(related[parent, child])
    kind, direction = edge_type(related[child, parent])
    return kind, -direction


def _root_of(node: str, incoming: dict[str, Edge]) -> str:
    while node in incoming:
        node = incoming[node].parent
    return node


def _ancestors(node: str, incoming: dict[str, Edge], merges: dict) -> set[str]:
    """Every model above ``node`` (both parents of a merge, whose ``incoming`` edge is from its first)."""
    found, queue = set(), [node]
    while queue:
        edge = incoming.get(queue.pop())
        for parent in (merges[edge.child][0] if edge.type == "merge" else [edge.parent]) if edge else []:
            if parent not in found:
                found.add(parent)
                queue.append(parent)
    return found


def _hang_merges(incoming: dict[str, Edge], merges: dict, related: dict, weight, oriented, evidence: dict) -> None:
    """Join each merge to the rooted forest ``incoming`` (child -> edge, changed in place): the
    merge hangs from its first parent, and every model but the merge's own ancestors moves under it
    where their pair weighs less in the spanning forest than the model's edge does now (a root's
    weighs infinitely much): the forest was spanned without merges, which sit between their parents
    and their parents' parent, too near both to be spanned with them."""
    for child, ((first, second), residual) in merges.items():
        e = evidence.get((first, child)) or evidence.get((child, first)) or {}
        incoming[child] = Edge(first, child, "merge", float(1.0 - residual / MERGE_TOL), {**e, "merge_residual": residual})
    pairs_of: dict[str, list[tuple[str, str]]] = {}
    for a, b in related:
        for node in (a, b):
            if node in merges:
                pairs_of.setdefault(node, []).append((a, b))
    for child in merges:
        above = _ancestors(child, incoming, merges)
        for a, b in pairs_of.get(child, []):
            other, e = (b if a == child else a), related[a, b]
            now = incoming.get(other)
            current = weight(now.parent, other, now.evidence) if now and now.type != "merge" else np.inf
            if other not in above and other not in merges and weight(a, b, e) < current:
                incoming[other] = oriented(child, other)


def _reattach(root: str, tree: list[Edge], graphs: dict[str, WeightGraph], evidence: dict,
              merges: dict[str, tuple[tuple[str, str], float]]) -> list[Edge]:
    """``tree`` (rooted at ``root``; a merge in it hangs from its first parent of ``merges``) with
    each fully fine-tuned model hung from the earlier trained or merged model of its tree that best
    explains it. All members are aligned to the root's basis; "earlier" is nearer the root, and no
    descendant of a model is its candidate. The candidate sharing the most exactly unchanged weights
    wins (a fine-tune leaves the weights it got no gradient for as its parent had them), then the
    lowest :func:`_parent_cost`: near, by a single optimizer run. LoRA and partial fine-tunes keep
    the parent their exact structure chose; copies (cast, pruned, symmetry) stay leaves and keep
    their source."""
    incoming = {e.child: e for e in tree}
    x = {v: _in_basis(graphs[root], graphs[v]) for v in [root, *incoming]}
    order = [root] + sorted(incoming, key=lambda v: _norm(x[v], x[root]))
    placed: list[str] = [root]
    for v in order[1:]:
        if incoming[v].type == "finetune":  # lora and partial edges rest on exact structure: kept
            earlier = [p for p in placed if (p == root or incoming[p].type in (*TRAINED, "merge"))
                       and v not in _ancestors(p, incoming, merges)]
            parent = min(earlier, key=lambda p: (-_equal_share(graphs[v], graphs[p]), _parent_cost(x[p], x[v])),
                         default=None)
            if parent is not None and parent != incoming[v].parent:
                e = evidence.get((parent, v)) or evidence.get((v, parent)) or pair_evidence(graphs[parent], graphs[v])
                kind, _ = edge_type(e)
                incoming[v] = Edge(parent, v, kind if kind in TRAINED else incoming[v].type,
                                   _confidence(e["distance"]), e)
        placed.append(v)
    return list(incoming.values())


def update_flatness(update: dict[str, np.ndarray]) -> float:
    """How flat the magnitude profile of a weight update is: per weight matrix, the median of
    ``|update|`` over its 99.9th percentile, averaged over the matrices that changed. Adam, which
    nearly every fine-tune uses, moves each weight by at most about its learning rate per step, and
    weights with a steady gradient sign move by nearly that bound, so one run's update is flat
    (median near the top; about 0.3 on the lineage zoo), while the difference of two siblings' runs,
    or two generations of runs added, mixes two profiles and is peaked (a Gaussian's ratio is 0.2).
    Invariant to the models' symmetries when both are in one basis."""
    ratios = []
    for d in update.values():
        magnitude = np.abs(d).ravel()
        if d.ndim >= 2 and magnitude.any():
            top = np.quantile(magnitude, 0.999)
            ratios.append(np.median(magnitude) / top if top > 0 else 0.0)
    return float(np.mean(ratios)) if ratios else 0.0


def _parent_cost(parent: dict[str, np.ndarray], child: dict[str, np.ndarray]) -> float:
    """How badly ``parent`` explains ``child`` (both in one basis): their distance, divided by
    :func:`update_flatness` of the update to the power ``FLATNESS_POWER``."""
    update = {n: child[n] - t for n, t in parent.items()}
    return _norm(child, parent) / max(update_flatness(update), 1e-6) ** FLATNESS_POWER


def _equal_share(a: WeightGraph, b: WeightGraph) -> float:
    """The share of weights exactly equal in two models as stored."""
    same = sum(int((np.asarray(t) == np.asarray(b.tensors[n])).sum()) for n, t in a.tensors.items())
    return same / max(1, a.num_params)


def _in_basis(reference: WeightGraph, graph: WeightGraph) -> dict[str, np.ndarray]:
    """``graph``'s weights aligned to ``reference``'s basis, in float64."""
    tensors = graph.tensors if graph is reference else match(reference, graph).aligned
    return {n: np.asarray(tensors[n], np.float64) for n in reference.tensors}


def _norm(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """The Euclidean distance between two models' weights in one basis."""
    return float(np.sqrt(sum(np.square(a[n] - t).sum() for n, t in b.items())))


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


def _best_root(tree: nx.Graph, costs: dict[tuple[str, str], float]) -> str:
    """The node whose rooting of ``tree`` costs least in orientation ``costs`` (``(parent, child)``
    -> cost; ties: the first by name); by rerooting: moving the root across an edge flips that
    edge alone."""
    start = min(tree.nodes)
    cost = {start: sum(costs[p, c] for p, c in nx.bfs_edges(tree, start))}
    for parent, child in nx.bfs_edges(tree, start):
        cost[child] = cost[parent] - costs[parent, child] + costs[child, parent]
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
