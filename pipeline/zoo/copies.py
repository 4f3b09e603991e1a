"""Planted near-duplicates: copies of zoo models that compute the same function up to the symmetries,
with ground truth in the catalog (``duplicate_of``, ``transform``), for near-duplicate evaluation.

Each copy is its parent under a random group element of :mod:`pipeline.symmetry` (hidden neurons
permuted; ReLU units rescaled; tanh/sine units sign-flipped), and every ``finetune_every``-th copy is
then trained for a few steps on its parent's task (a lightly fine-tuned copy).
"""
from __future__ import annotations

import numpy as np
import torch

from pipeline.checkpoint import open_checkpoint, save_checkpoint
from pipeline.graph import build_graph
from pipeline.storage import join
from pipeline.symmetry import apply, random_element
from pipeline.zoo.train import evaluate_model, rebuild_model

#: copies per preset
PRESET_COPIES = {"tiny": 6, "default": 60}
FINETUNE_STEPS, FINETUNE_LR = 5, 1e-4


def choose_parents(catalog: list[dict], count: int, seed: int = 0) -> list[dict]:
    """``count`` parents dealt round-robin over families (so every family gets copies), at random
    within a family; deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    by_family: dict[str, list[dict]] = {}
    for row in sorted(catalog, key=lambda r: r["model_id"]):
        by_family.setdefault(row["family"], []).append(row)
    queues = {f: [rows[i] for i in rng.permutation(len(rows))] for f, rows in sorted(by_family.items())}
    parents = []
    while len(parents) < count and any(queues.values()):
        for rows in queues.values():
            if rows and len(parents) < count:
                parents.append(rows.pop())
    return parents


def plant_copy(parent: dict, out_dir: str, index: int, finetune: bool, seed: int = 0) -> dict:
    """Write one transformed (and optionally fine-tuned) copy of ``parent``; return its catalog row."""
    rng = np.random.default_rng([seed, index])
    ckpt = open_checkpoint(join(out_dir, parent["path"]))
    graph = build_graph(ckpt)
    tensors = apply(graph, random_element(graph, rng))
    model, data = rebuild_model(parent, tensors)
    transform = "symmetry"
    if finetune:
        torch.manual_seed(int(rng.integers(2**31)))
        opt = torch.optim.Adam(model.parameters(), lr=FINETUNE_LR)
        model.train()
        for _ in range(FINETUNE_STEPS):
            pick = torch.randint(0, len(data.x_train), (64,))
            opt.zero_grad(set_to_none=True)
            data.loss(model(data.x_train[pick]), data.y_train[pick]).backward()
            opt.step()
        transform = f"symmetry+finetune{FINETUNE_STEPS}"
    train_metric, test_metric = evaluate_model(model, data)
    model_id = f"{parent['model_id']}-copy{index:03d}"
    path = join("models", f"{model_id}.safetensors")
    metadata = {**ckpt.metadata, "model_id": model_id, "test_metric": str(test_metric),
                "duplicate_of": parent["model_id"], "transform": transform}
    save_checkpoint(model.state_dict(), join(out_dir, path), metadata)
    return {**parent, "model_id": model_id, "path": path, "train_metric": train_metric, "test_metric": test_metric,
            "duplicate_of": parent["model_id"], "transform": transform}


def plant_copies(catalog: list[dict], out_dir: str, count: int, seed: int = 0, finetune_every: int = 3) -> list[dict]:
    """Plant ``count`` copies (one per parent, see :func:`choose_parents`); returns their catalog rows."""
    torch.set_num_threads(1)
    return [plant_copy(parent, out_dir, i, finetune=i % finetune_every == finetune_every - 1, seed=seed)
            for i, parent in enumerate(choose_parents(catalog, count, seed))]
