"""The evaluation report: every encoder and baseline measured the same way on held-out models.

* retrieval: precision, recall and F1 at 1, 5, 10 and mAP (relevant = same task and data set);
* symmetry robustness: cosine similarity and distance between a model's embedding and those of
  randomly transformed copies (:func:`pipeline.symmetry.random_element`, all annotated symmetries);
* clustering: silhouette (cosine) and Davies-Bouldin over task labels;
* accuracy prediction: Kendall tau between predicted and true test accuracy of held-out CNNs (the
  trained metric head; a ridge probe on training-split embeddings for encoders without one);
* transfer: what fine-tuning a retrieved neighbour gains over training from scratch
  (:mod:`.transfer`).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from pipeline.encoders import embed
from pipeline.evaluation.retrieval import ranked_relevance, retrieval_metrics, task_labels
from pipeline.evaluation.transfer import transfer_gains
from pipeline.graph.rows import records_to_graphs
from pipeline.ingest.store import labels
from pipeline.numerics import unit_rows
from pipeline.symmetry import random_element, transformed

RECALL_LEVELS = np.linspace(0, 1, 11)


def symmetry_robustness(encoder, graphs: list, copies: int = 2, seed: int = 0) -> dict[str, float]:
    """Mean/min cosine and mean/max distance (of unit vectors) between each model and ``copies``
    randomly transformed copies of it."""
    rng = np.random.default_rng(seed)
    moved = [transformed(g, random_element(g, rng)) for g in graphs for _ in range(copies)]
    z = unit_rows(embed(encoder, graphs).double().numpy()).repeat(copies, 0)
    zm = unit_rows(embed(encoder, moved).double().numpy())
    cos = (z * zm).sum(1)
    dist = np.linalg.norm(z - zm, axis=1)
    return {"sym_mean_cos": float(cos.mean()), "sym_min_cos": float(cos.min()),
            "sym_mean_dist": float(dist.mean()), "sym_max_dist": float(dist.max())}


def clustering(z: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import davies_bouldin_score, silhouette_score

    return {"silhouette": float(silhouette_score(z, labels, metric="cosine")),
            "davies_bouldin": float(davies_bouldin_score(unit_rows(z), labels))}


def accuracy_prediction(predicted: np.ndarray, true: np.ndarray) -> float:
    from scipy.stats import kendalltau

    return float(kendalltau(predicted, true).statistic)


def ridge_prediction(z_train: np.ndarray, y_train: np.ndarray, z_test: np.ndarray) -> np.ndarray:
    from sklearn.linear_model import RidgeCV

    return RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(z_train, y_train).predict(z_test)


def precision_recall_curve(z: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Interpolated precision at ``RECALL_LEVELS``, averaged over queries (every item queries all others)."""
    rel = ranked_relevance(z.astype(np.float64), labels)
    rel = rel[rel.sum(1) > 0]
    hits = np.cumsum(rel, 1)
    precision = hits / np.arange(1, rel.shape[1] + 1)
    recall = hits / rel.sum(1, keepdims=True)
    best_after = np.maximum.accumulate(precision[:, ::-1], 1)[:, ::-1]  # interpolated precision
    curve = [np.where(recall >= r, best_after, 0).max(1).mean() for r in RECALL_LEVELS]
    return np.array(curve)


def evaluate_encoder(encoder, head, test: pa.Table, train: pa.Table, queries: list[int],
                     scratch: dict, seed: int = 0) -> tuple[dict[str, float], np.ndarray]:
    """Every metric of the report for one encoder; returns ``(metrics, test embeddings)``. ``head``:
    the trained metric head (``None``: a ridge probe is fitted on the training split)."""
    test_graphs, train_graphs = list(records_to_graphs(test)), list(records_to_graphs(train))
    z, z_train = embed(encoder, test_graphs).numpy(), embed(encoder, train_graphs).numpy()
    relevance = task_labels(test)
    metrics = retrieval_metrics(z, relevance)
    metrics.update(symmetry_robustness(encoder, test_graphs, seed=seed))
    metrics.update(clustering(z, relevance))
    cnn = np.array(labels(test, "family")) == "cnn"
    true = np.array(labels(test, "test_metric"))
    if cnn.sum() >= 3:
        if head is not None:
            with torch.no_grad():
                predicted = head(torch.from_numpy(z[cnn])).squeeze(-1).numpy()
        else:
            train_cnn = np.array(labels(train, "family")) == "cnn"
            predicted = ridge_prediction(z_train[train_cnn], np.array(labels(train, "test_metric"))[train_cnn], z[cnn])
        metrics["kendall_tau"] = accuracy_prediction(predicted, true[cnn])
    metrics.update(transfer_gains(test, z, train, z_train, queries, scratch, seed))
    return metrics, z
