"""Contrastive training of weight encoders under Ray Train.

Loss (Schürholt et al.'s contrastive weight-space learning, in the supervised-contrastive form of
:func:`pipeline.training.loss.contrastive_loss`): multi-positive InfoNCE (in the supervised-contrastive form, every positive its
own term) at temperature ``tau`` over two augmented views of every model in the batch, where the
positives of a view are the other view of the same model and the views of other *well-performing*
models of the same task (``test_metric`` at or above the task's ``low_performer_percentile``; 0
makes every same-task model a positive); every other model in the batch, including the task's low
performers, is a negative.
Adversarial copies of the batch's models (FGSM on their own task loss) and broken copies (one
layer's rows permuted without the next layer's columns) join as negatives only.
Plus ``lambda`` times the MSE of a metric head predicting the model's test metric standardized within
its task (what can be read from weights is how a model ranks among its task's models).

Runs as ``TorchTrainer(train_loop, ScalingConfig(num_workers, use_gpu))`` on CPU or GPU workers; each
epoch reports metrics and a checkpoint, and a run restarted with the same name and storage path
resumes from its last checkpoint.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import torch
from torch import nn
from torch.nn import functional as F

from pipeline.encoders import build_encoder, embed, prepare_many, probe_inputs_of
from pipeline.encoders.probes import load_probe_inputs
from pipeline.encoders.state import EncoderWithHead, embedding_dim, load_state
from pipeline.evaluation.retrieval import retrieval_metrics, task_labels
from pipeline.graph.rows import records_to_graphs
from pipeline.ingest.store import label_rows, labels
from pipeline.symmetry import uncoupled_permutation
from pipeline.training.augment import adversarial, augment, rebuildable
from pipeline.training.loss import contrastive_loss
from pipeline.training.ray_train import fit_on_splits, report_epoch, restored_state


@dataclass
class TrainConfig:
    encoder: str = "scale_gmn"
    encoder_kwargs: dict = field(default_factory=dict)
    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    temperature: float = 0.07
    metric_weight: float = 0.8
    adversarial: bool = True     # FGSM copies of each model as extra negatives
    broken_negatives: bool = True  # uncoupled-permuted copies (a different function) as extra negatives
    seed: int = 0
    low_performer_percentile: float = 10.0  # below it (per task), a model is a negative of its task
    probe_inputs: str = ""  # .npz of the encoder's own probe inputs (see pipeline.encoders.probes), if any
    # filled from the training split by fit_encoder:
    good_threshold: dict = field(default_factory=dict)   # task -> low-performer threshold
    metric_stats: dict = field(default_factory=dict)     # task -> test_metric (mean, std)


ADVERSARIAL_FIELDS = ("family", "arch", "activation", "dropout", "task", "image_index")


def batch_labels(table: pa.Table, config: TrainConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(task group ids, well-performing mask, standardized metric) of a batch of model rows."""
    tasks, metrics = labels(table, "task"), labels(table, "test_metric")
    ids = {t: i for i, t in enumerate(sorted(set(tasks)))}
    good = [m >= config.good_threshold.get(t, -np.inf) for t, m in zip(tasks, metrics)]
    target = [(m - config.metric_stats[t][0]) / config.metric_stats[t][1] for m, t in zip(metrics, tasks)]
    return torch.tensor([ids[t] for t in tasks]), torch.tensor(good), torch.tensor(target, dtype=torch.float32)


def _validation_embeddings(model: nn.Module, table: pa.Table) -> np.ndarray:
    encoder = model.module.encoder if hasattr(model, "module") else model.encoder
    z = embed(encoder, list(records_to_graphs(table))).numpy()
    encoder.train()
    return z


def train_loop(config_dict: dict) -> None:
    """Ray Train worker loop (also runs in-process when ``num_workers=0``)."""
    import ray.train
    import ray.train.torch

    config = TrainConfig(**config_dict)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed + ray.train.get_context().get_world_rank())
    encoder = build_encoder(config.encoder, **config.encoder_kwargs)
    probes = probe_inputs_of(encoder)
    if config.probe_inputs and probes is not None:
        probes.set(load_probe_inputs(config.probe_inputs))
    model = ray.train.torch.prepare_model(EncoderWithHead(encoder, embedding_dim(asdict(config))),
                                          parallel_strategy_kwargs={"find_unused_parameters": True})
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    device = ray.train.torch.get_device()
    start_epoch = 0
    state = restored_state(device)
    if state:
        (model.module if hasattr(model, "module") else model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch = state["epoch"] + 1

    train_shard = ray.train.get_dataset_shard("train")
    val_table = pa.concat_tables(list(ray.train.get_dataset_shard("val").iter_batches(batch_format="pyarrow",
                                                                                      batch_size=None)))
    for epoch in range(start_epoch, config.epochs):
        losses = []
        for table in train_shard.iter_batches(batch_size=config.batch_size, batch_format="pyarrow",
                                              local_shuffle_buffer_size=4 * config.batch_size,
                                              local_shuffle_seed=config.seed + epoch):
            graphs = list(records_to_graphs(table))
            if len(graphs) < 2:
                continue
            groups, good, target = (t.to(device) for t in batch_labels(table, config))
            views = [[x.to(device) for x in prepare_many([augment(g, rng) for g in graphs], probes=probes)]
                     for _ in range(2)]
            (z1, m1), (z2, m2) = model(views[0]), model(views[1])
            copies = []
            if config.adversarial:
                specs = label_rows(table, ADVERSARIAL_FIELDS)
                copies += [adversarial(g, s, rng) for g, s in zip(graphs, specs) if rebuildable(s)]
            if config.broken_negatives:
                broken = ((g, uncoupled_permutation(g, rng)) for g in graphs)
                copies += [g.with_tensors(t) for g, t in broken if t is not None]
            negatives = model([x.to(device) for x in prepare_many(copies, probes=probes)])[0] if copies else None
            loss = (contrastive_loss(z1, z2, groups, good, config.temperature, negatives)
                    + config.metric_weight * 0.5 * (F.mse_loss(m1, target) + F.mse_loss(m2, target)))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        val = retrieval_metrics(_validation_embeddings(model, val_table), task_labels(val_table))
        metrics = {"epoch": epoch, "resumed_at_epoch": start_epoch,
                   "loss": float(np.mean(losses)) if losses else float("nan"),
                   "val_p_at_1": val["p_at_1"], "val_map": val["map"]}
        report_epoch(metrics, {"model": (model.module if hasattr(model, "module") else model).state_dict(),
                               "optimizer": optimizer.state_dict(), "epoch": epoch, "config": asdict(config)})


def label_statistics(train_models: pa.Table, percentile: float) -> tuple[dict, dict]:
    """Per-task low-performer thresholds (the ``percentile`` of the task's test metric) and
    per-task test-metric (mean, std), from the training split."""
    rows = train_models.to_pylist()
    thresholds, stats = {}, {}
    for task in {r["task"] for r in rows}:
        values = np.array([r["test_metric"] for r in rows if r["task"] == task])
        thresholds[task] = float(np.percentile(values, percentile))
        stats[task] = (float(values.mean()), float(max(values.std(), 1e-3)))
    return thresholds, stats


def fit_encoder(graphs_dir: str, models: pa.Table, config: TrainConfig, storage_path: str, run_name: str,
                num_workers: int = 1, use_gpu: bool = False, cpus_per_worker: float = 1.0):
    """Train ``config.encoder`` on the ``train`` split of ``models`` (see
    :func:`pipeline.training.dataset.labelled_models`), validating on ``val``. Returns the Ray Train result:
    its ``checkpoint`` is the latest (what a restart resumes from); the best by validation mAP is
    kept too (``result.get_best_checkpoint("val_map", "max")``)."""
    from pipeline.training.dataset import split

    train, val = split(models, "train"), split(models, "val")
    config.good_threshold, config.metric_stats = label_statistics(train, config.low_performer_percentile)
    return fit_on_splits(train_loop, asdict(config), graphs_dir, train, val, storage_path, run_name, ("val_map", "max"),
                         num_workers, use_gpu, cpus_per_worker)


def refit_metric_head(model: EncoderWithHead, train: pa.Table, val: pa.Table, config: TrainConfig,
                      steps: int = 2000, lr: float = 1e-3, check_every: int = 50) -> tuple[float, float]:
    """Fit the metric head again on the frozen encoder's embeddings of the ``train`` model rows (as
    views with no augmentation), full batch, keeping the head with the lowest MSE on ``val`` (checked
    every ``check_every`` steps; the head as trained counts as step 0). Returns the validation MSE
    ``(before, after)``. During training the head saw augmented views, whose DropConnect changes the
    very metric it predicts, beside a contrastive loss that gathers each task's models together; a
    final fit on clean embeddings reads out what they still say about the metric."""
    model.eval()
    data = {name: (embed(model.encoder, list(records_to_graphs(t))), batch_labels(t, config)[2])
            for name, t in (("train", train), ("val", val))}
    head = model.metric_head

    def val_mse() -> float:
        with torch.no_grad():
            return F.mse_loss(head(data["val"][0]).squeeze(-1), data["val"][1]).item()

    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=config.weight_decay)
    first = best = val_mse()
    best_state = {k: v.clone() for k, v in head.state_dict().items()}
    for step in range(1, steps + 1):
        loss = F.mse_loss(head(data["train"][0]).squeeze(-1), data["train"][1])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % check_every == 0 and (current := val_mse()) < best:
            best, best_state = current, {k: v.clone() for k, v in head.state_dict().items()}
    head.load_state_dict(best_state)
    return first, best


def load_training_state(path: str) -> tuple[EncoderWithHead, TrainConfig]:
    """:func:`pipeline.encoders.state.load_state` with the config as a :class:`TrainConfig`."""
    model, config = load_state(path)
    return model, TrainConfig(**config)
