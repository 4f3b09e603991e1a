"""Retrieval metrics over embeddings, trec_eval conventions (MAP divides by all relevant items), and
what an encoder makes of broken copies."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
from torch import nn

from pipeline.encoders import embed
from pipeline.graph.rows import records_to_graphs
from pipeline.ingest.store import labels
from pipeline.numerics import unit_rows
from pipeline.symmetry import uncoupled_permutation


def task_labels(table: pa.Table) -> np.ndarray:
    """Relevance label of model rows: same task and data set."""
    return np.array([f"{t}|{d}" for t, d in zip(labels(table, "task"), labels(table, "dataset"))])


def ranked_relevance(embeddings: np.ndarray, relevance: np.ndarray) -> np.ndarray:
    """``[N, N-1]`` boolean: for each query, whether each other item (by decreasing cosine
    similarity; the query itself excluded) has the query's label."""
    z = unit_rows(embeddings)
    sim = z @ z.T
    np.fill_diagonal(sim, -np.inf)
    order = np.argsort(-sim, axis=1, kind="stable")[:, :-1]
    return relevance[order] == relevance[:, None]


def retrieval_metrics(embeddings: np.ndarray, relevance, ks=(1, 5, 10)) -> dict[str, float]:
    """precision@k, recall@k, F1@k and mAP, every item querying all others; ``relevance [N]``: items
    with the same value are relevant to each other."""
    rel = ranked_relevance(np.asarray(embeddings, dtype=np.float64), np.asarray(relevance))
    num_relevant = rel.sum(1)
    valid = num_relevant > 0
    out = {}
    for k in ks:
        hits = rel[:, :k].sum(1)
        p, r = hits / k, np.where(valid, hits / np.maximum(num_relevant, 1), 0.0)
        out[f"p_at_{k}"] = float(p[valid].mean())
        out[f"r_at_{k}"] = float(r[valid].mean())
        out[f"f1_at_{k}"] = float(np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0)[valid].mean())
    precision_at_hit = np.cumsum(rel, 1) / np.arange(1, rel.shape[1] + 1)
    ap = (precision_at_hit * rel).sum(1) / np.maximum(num_relevant, 1)
    out["map"] = float(ap[valid].mean())
    return out


def evaluate_retrieval(encoder: nn.Module, table: pa.Table, seed: int = 0) -> dict[str, float]:
    """Retrieval metrics of ``encoder`` over model rows (relevant = same task and data set), and
    what it makes of *broken copies*: each model with one hidden layer's rows permuted but not the
    next layer's columns (a different function). ``broken_copy_cos``: mean cosine similarity of a
    model and its broken copy; ``broken_copy_top1``: how often the broken copy is the model's
    nearest neighbour among all models and copies (an encoder blind to wiring says 1.0)."""
    graphs = list(records_to_graphs(table))
    rng = np.random.default_rng(seed)
    z = embed(encoder, graphs).numpy()
    metrics = retrieval_metrics(z, task_labels(table))
    broken = [(k, uncoupled_permutation(g, rng)) for k, g in enumerate(graphs)]
    broken = [(k, t) for k, t in broken if t is not None]  # models with a layer to break
    if not broken:
        return metrics
    rows = np.array([k for k, _ in broken])
    zu = unit_rows(z)
    bu = unit_rows(embed(encoder, [graphs[k].with_tensors(t) for k, t in broken]).numpy())
    sim = zu[rows] @ np.concatenate([zu, bu]).T                    # queries: the breakable models
    sim[np.arange(len(rows)), rows] = -np.inf                        # not themselves
    metrics["broken_copy_cos"] = float(np.mean(np.sum(zu[rows] * bu, 1)))
    metrics["broken_copy_top1"] = float(np.mean(sim.argmax(1) == len(z) + np.arange(len(rows))))
    return metrics
