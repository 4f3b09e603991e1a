"""Transfer: for held-out classification models, the top-1 neighbour among training-split models is
fine-tuned on 10/50/100 examples of the held-out model's task; the gain is its test accuracy minus
that of the held-out model's architecture trained from scratch on the same examples. A neighbour
whose input/output shapes do not fit the task is unusable: gain 0, the user trains from scratch.
"""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import torch
from torch.nn import functional as F

from pipeline.graph.rows import records_to_graphs
from pipeline.ingest.store import label_rows, labels
from pipeline.numerics import unit_rows
from pipeline.zoo.train import build_model, rebuild_model, spec_data

BUDGETS = (10, 50, 100)


def _catalog_row(table: pa.Table, i: int) -> dict:
    return label_rows(table.slice(i, 1))[0]


def _fit(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 100, lr: float = 1e-3) -> None:
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
    for i, (task, family, metric) in enumerate(zip(labels(test, "task"), labels(test, "family"),
                                                    labels(test, "metric_name"))):
        if family in ("mlp", "resnet") and metric == "accuracy" and len(chosen.setdefault(task, [])) < per_task:
            chosen[task].append(i)
    return [i for rows in chosen.values() for i in rows]


def scratch_accuracy(test: pa.Table, queries: list[int], seed: int = 0) -> dict[tuple[int, int], float]:
    """(query, budget) -> test accuracy of the query's architecture trained from scratch on
    ``budget`` examples of its task (shared by every encoder)."""
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
    neighbours = (unit_rows(z_test[queries]) @ unit_rows(z_train).T).argmax(1)
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
