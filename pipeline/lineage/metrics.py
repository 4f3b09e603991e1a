"""Scores of a recovered forest against the ground truth (a lineage zoo's catalog).

Undirected edge precision, recall and F1; direction and type accuracy over the edges found; the
adjusted Rand index of the trees as clusters of models; each also split by the true edge into a
model: *transformed* (a symmetry copy, or a derivation re-based by a random group element after it)
or *plain*.
"""
from __future__ import annotations

import networkx as nx
from sklearn.metrics import adjusted_rand_score

from pipeline.checkpoint.discover import model_name
from pipeline.lineage.forest import Edge


def true_edges(rows: list[dict], adapters: set[str] = frozenset()) -> list[Edge]:
    """The catalog's derivations as edges (``parents``, ``edge_type``; ``evidence["transformed"]``),
    and for each LoRA fine-tune whose PEFT folder is among ``adapters`` (model names), the edge from
    its parent to the adapter."""
    edges = [Edge(p, r["model_id"], r["edge_type"], 1.0, {"transformed": bool(r["transformed"]) or r["edge_type"] == "symmetry"})
             for r in rows for p in r["parents"]]
    return edges + [Edge(r["parents"][0], model_name(r["adapter"]), "lora", 1.0, {"transformed": False})
                    for r in rows if r.get("adapter") and model_name(r["adapter"]) in adapters]


def _clusters(ids: list[str], edges: list[Edge]) -> list[int]:
    graph = nx.Graph()
    graph.add_nodes_from(ids)
    graph.add_edges_from((e.parent, e.child) for e in edges)
    label = {i: n for n, component in enumerate(nx.connected_components(graph)) for i in component}
    return [label[i] for i in ids]


def _scores(predicted: list[Edge], truth: list[Edge]) -> dict:
    found = {frozenset((e.parent, e.child)): e for e in predicted}
    hits = [(t, found[frozenset((t.parent, t.child))]) for t in truth if frozenset((t.parent, t.child)) in found]
    precision = len(hits) / len(predicted) if predicted else 0.0
    recall = len(hits) / len(truth) if truth else 0.0
    return {"edges": len(truth), "predicted": len(predicted), "precision": precision, "recall": recall,
            "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
            "direction_acc": sum(p.parent == t.parent for t, p in hits) / len(hits) if hits else 0.0,
            "type_acc": sum(p.type == t.type for t, p in hits) / len(hits) if hits else 0.0}


def score(predicted: list[Edge], rows: list[dict], adapters: set[str] = frozenset()) -> dict:
    """Every score, overall and split into ``plain`` and ``transformed`` true edges (a predicted
    edge counts in the split of the true edge it finds, else in its child's); ``adapters``: the
    PEFT adapters among the models (see :func:`true_edges`)."""
    truth = true_edges(rows, adapters)
    kind = {frozenset((t.parent, t.child)): t.evidence["transformed"] for t in truth}
    transformed = {t.child for t in truth if t.evidence["transformed"]}
    split = lambda edges, keep: [e for e in edges if kind.get(frozenset((e.parent, e.child)),  # noqa: E731
                                                              e.child in transformed) == keep]
    ids = [r["model_id"] for r in rows]
    out = _scores(predicted, truth)
    out["ari"] = adjusted_rand_score(_clusters(ids, truth), _clusters(ids, predicted))
    for name, keep in (("plain", False), ("transformed", True)):
        out[name] = _scores(split(predicted, keep), split(truth, keep))
    return out
