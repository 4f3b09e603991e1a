"""The evaluation report: every encoder and baseline measured the same way on held-out models.

* retrieval: precision, recall and F1 at 1, 5, 10 and mAP (relevant = same task and data set);
* symmetry robustness: cosine similarity and distance between a model's embedding and those of
  randomly transformed copies (:func:`pipeline.symmetry.random_element`, all annotated symmetries);
* clustering: silhouette (cosine) and Davies-Bouldin over task labels;
* accuracy prediction: Kendall tau between predicted and true test accuracy of held-out CNNs (the
  trained metric head; a ridge probe on training-split embeddings for encoders without one);
* transfer: for held-out classification models, the top-1 neighbour among training-split models is
  fine-tuned on 10/50/100 examples of the held-out model's task; gain = its test accuracy minus that
  of the held-out model's architecture trained from scratch on the same examples (a neighbour whose
  input/output shapes do not fit the task is unusable: gain 0, the user trains from scratch).
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pyarrow as pa
import torch

from pipeline.encoders import embed
from pipeline.graph.rows import records_to_graphs
from pipeline.retrieval import ranked_relevance, retrieval_metrics, task_labels
from pipeline.symmetry import apply, random_element

BUDGETS = (10, 50, 100)
RECALL_LEVELS = np.linspace(0, 1, 11)


def symmetry_robustness(encoder, graphs: list, copies: int = 2, seed: int = 0) -> dict[str, float]:
    """Mean/min cosine and mean/max distance (of unit vectors) between each model and ``copies``
    randomly transformed copies of it."""
    rng = np.random.default_rng(seed)
    moved = [dataclasses.replace(g, tensors=apply(g, random_element(g, rng))) for g in graphs for _ in range(copies)]
    z = _unit(embed(encoder, graphs).double().numpy()).repeat(copies, 0)
    zm = _unit(embed(encoder, moved).double().numpy())
    cos = (z * zm).sum(1)
    dist = np.linalg.norm(z - zm, axis=1)
    return {"sym_mean_cos": float(cos.mean()), "sym_min_cos": float(cos.min()),
            "sym_mean_dist": float(dist.mean()), "sym_max_dist": float(dist.max())}


def clustering(z: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import davies_bouldin_score, silhouette_score

    return {"silhouette": float(silhouette_score(z, labels, metric="cosine")),
            "davies_bouldin": float(davies_bouldin_score(_unit(z), labels))}


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


def _unit(z: np.ndarray) -> np.ndarray:
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-30)


# --- transfer ------------------------------------------------------------------------------------

def _catalog_row(table: pa.Table, i: int) -> dict:
    return {c[6:]: table.column(c)[i].as_py() for c in table.column_names if c.startswith("label_")}


def _fit(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 100, lr: float = 1e-3) -> None:
    from torch.nn import functional as F

    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()


def _accuracy(model, data) -> float:
    with torch.no_grad():
        return float((model(data.x_test).argmax(1) == data.y_test).float().mean())


def transfer_queries(test: pa.Table, per_task: int = 5) -> list[int]:
    """Held-out dense classification models to transfer to: up to ``per_task`` per task."""
    chosen: dict[str, list[int]] = {}
    for i, (task, family, metric) in enumerate(zip(test.column("label_task").to_pylist(),
                                                    test.column("label_family").to_pylist(),
                                                    test.column("label_metric_name").to_pylist())):
        if family in ("mlp", "resnet") and metric == "accuracy" and len(chosen.setdefault(task, [])) < per_task:
            chosen[task].append(i)
    return [i for rows in chosen.values() for i in rows]


def scratch_accuracy(test: pa.Table, queries: list[int], seed: int = 0) -> dict[tuple[int, int], float]:
    """(query, budget) -> test accuracy of the query's architecture trained from scratch on
    ``budget`` examples of its task (shared by every encoder)."""
    from pipeline.zoo.train import build_model, spec_data

    out = {}
    for q in queries:
        row = _catalog_row(test, q)
        spec = {**row, "arch": json.loads(row["arch"])}
        data = spec_data(spec)
        for budget in BUDGETS:
            torch.manual_seed(seed)
            pick = torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(seed + budget))[:budget]
            model = build_model(spec, data.num_inputs, data.num_outputs)
            _fit(model, data.x_train[pick], data.y_train[pick])
            out[q, budget] = _accuracy(model, data)
    return out


def transfer_gains(test: pa.Table, z_test: np.ndarray, train: pa.Table, z_train: np.ndarray, queries: list[int],
                   scratch: dict[tuple[int, int], float], seed: int = 0) -> dict[str, float]:
    """``transfer_gain_<budget>``: mean over queries of (fine-tuned top-1 neighbour's accuracy -
    scratch accuracy), see the module docstring."""
    from pipeline.zoo.train import rebuild_model, spec_data

    neighbours = (_unit(z_test[queries]) @ _unit(z_train).T).argmax(1)
    train_graphs = {int(n): g for n, g in zip(sorted(set(neighbours.tolist())),
                                             records_to_graphs(train.take(sorted(set(neighbours.tolist())))))}
    gains = {b: [] for b in BUDGETS}
    for q, n in zip(queries, neighbours.tolist()):
        row = _catalog_row(test, q)
        data = spec_data({**row, "arch": json.loads(row["arch"])})
        neighbour = _catalog_row(train, n)
        try:
            model, own = rebuild_model(neighbour, train_graphs[n].tensors)
            usable = own.num_inputs == data.num_inputs and own.num_outputs == data.num_outputs \
                and own.kind == data.kind and neighbour["family"] in ("mlp", "resnet")
        except (KeyError, ValueError, RuntimeError):
            usable = False
        for budget in BUDGETS:
            if not usable:
                gains[budget].append(0.0)
                continue
            model, _ = rebuild_model(neighbour, train_graphs[n].tensors)
            pick = torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(seed + budget))[:budget]
            _fit(model, data.x_train[pick], data.y_train[pick])
            gains[budget].append(_accuracy(model, data) - scratch[q, budget])
    return {f"transfer_gain_{b}": float(np.mean(v)) if v else float("nan") for b, v in gains.items()}


def evaluate_encoder(encoder, head, test: pa.Table, train: pa.Table, queries: list[int],
                     scratch: dict, seed: int = 0) -> tuple[dict[str, float], np.ndarray]:
    """Every metric of the report for one encoder; returns ``(metrics, test embeddings)``. ``head``:
    the trained metric head (``None``: a ridge probe is fitted on the training split)."""
    test_graphs, train_graphs = list(records_to_graphs(test)), list(records_to_graphs(train))
    z, z_train = embed(encoder, test_graphs).numpy(), embed(encoder, train_graphs).numpy()
    labels = task_labels(test)
    metrics = retrieval_metrics(z, labels)
    metrics.update(symmetry_robustness(encoder, test_graphs, seed=seed))
    metrics.update(clustering(z, labels))
    cnn = np.array(test.column("label_family").to_pylist()) == "cnn"
    true = np.array(test.column("label_test_metric").to_pylist())
    if cnn.sum() >= 3:
        if head is not None:
            with torch.no_grad():
                predicted = head(torch.from_numpy(z[cnn])).squeeze(-1).numpy()
        else:
            train_cnn = np.array(train.column("label_family").to_pylist()) == "cnn"
            predicted = ridge_prediction(z_train[train_cnn], np.array(train.column("label_test_metric").to_pylist())
                                         [train_cnn], z[cnn])
        metrics["kendall_tau"] = accuracy_prediction(predicted, true[cnn])
    metrics.update(transfer_gains(test, z, train, z_train, queries, scratch, seed))
    return metrics, z
