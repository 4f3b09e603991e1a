"""MoTHer (Horwitz et al., 2024, "On the Origin of Llamas: Model Tree Heritage Recovery"), re-implemented
as the baseline: raw-weight distances, kurtosis for direction, a minimum directed spanning tree.

For every pair of models of one architecture, the distance is ``1 - cosine`` of their raw weight
matrices, averaged over the matrices as ours is (no alignment: blind to permutations, sign flips
and rescalings); pairs closer than
:data:`pipeline.lineage.forest.RELATED` are related (the threshold ours uses, for a like-for-like
comparison). A fine-tuned model has heavier-tailed weights than its parent, so the directed cost of
``u -> v`` is the distance plus ``KURTOSIS_COST`` when ``v``'s mean per-layer excess kurtosis is
below ``u``'s; Chu-Liu/Edmonds gives the forest. MoTHer does not type its edges.
"""
from __future__ import annotations

import itertools

import networkx as nx
import numpy as np
from scipy.stats import kurtosis

from pipeline.graph.schema import WeightGraph
from pipeline.lineage.forest import RELATED, Edge
from pipeline.rebasin.spec import same_architecture

#: the cost of an edge whose child has the lower kurtosis
KURTOSIS_COST = 0.1


def weight_kurtosis(graph: WeightGraph) -> float:
    """Mean over weight matrices of their excess kurtosis (MoTHer's direction statistic)."""
    return float(np.mean([kurtosis(np.asarray(t, np.float64).ravel()) for t in graph.tensors.values()
                          if np.ndim(t) >= 2]))


def _matrices(graph: WeightGraph) -> list[np.ndarray]:
    """The weight matrices, each flattened and scaled to unit norm."""
    flat = [np.asarray(t, np.float64).ravel() for t in graph.tensors.values() if np.ndim(t) >= 2]
    return [m / max(np.linalg.norm(m), 1e-300) for m in flat]


def mother_forest(graphs: dict[str, WeightGraph]) -> list[Edge]:
    """MoTHer's forest over ``graphs`` (see the module docstring); edges typed ``unknown``."""
    ids = sorted(graphs)
    unit = {i: _matrices(graphs[i]) for i in ids}
    kurt = {i: weight_kurtosis(graphs[i]) for i in ids}
    digraph = nx.DiGraph()
    for i in ids:
        digraph.add_edge("\0root", i, weight=2.0 + KURTOSIS_COST)
    for a, b in itertools.combinations(ids, 2):
        if not same_architecture(graphs[a], graphs[b]):
            continue
        distance = 1.0 - float(np.mean([np.dot(x, y) for x, y in zip(unit[a], unit[b])]))
        if distance >= RELATED:
            continue
        for u, v in ((a, b), (b, a)):
            digraph.add_edge(u, v, weight=distance + (KURTOSIS_COST if kurt[v] < kurt[u] else 0.0), distance=distance)
    tree = nx.minimum_spanning_arborescence(digraph, attr="weight", preserve_attrs=True)
    return [Edge(u, v, "unknown", float(np.clip(1.0 - d["weight"] / RELATED, 0.0, 1.0)), {"raw_distance": d["distance"]})
            for u, v, d in tree.edges(data=True) if u != "\0root"]
