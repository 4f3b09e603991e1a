"""Retrieval metrics over embeddings, trec_eval conventions (MAP divides by all relevant items)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa


def task_labels(table: pa.Table) -> np.ndarray:
    """Relevance label of model rows (``label_*`` columns): same task and data set."""
    return np.array([f"{t}|{d}" for t, d in zip(table.column("label_task").to_pylist(),
                                                table.column("label_dataset").to_pylist())])


def ranked_relevance(embeddings: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``[N, N-1]`` boolean: for each query, whether each other item (by decreasing cosine
    similarity; the query itself excluded) has the query's label."""
    z = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-30)
    sim = z @ z.T
    np.fill_diagonal(sim, -np.inf)
    order = np.argsort(-sim, axis=1, kind="stable")[:, :-1]
    return labels[order] == labels[:, None]


def retrieval_metrics(embeddings: np.ndarray, labels, ks=(1, 5, 10)) -> dict[str, float]:
    """precision@k, recall@k, F1@k and mAP, every item querying all others."""
    labels = np.asarray(labels)
    rel = ranked_relevance(np.asarray(embeddings, dtype=np.float64), labels)
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
