"""The Ray Train conventions every trainer here follows (encoders, the autoencoder): one checkpoint
a worker reports each epoch (``state.pt``: model, optimizer and whatever else resumes the run),
resumed from the latest on restart, and a ``TorchTrainer`` over the ``train`` and ``val`` splits of
model rows, CPU or GPU workers by flag."""
from __future__ import annotations

import os
import tempfile

import pyarrow as pa
import torch


def restored_state(device) -> dict | None:
    """The ``state.pt`` of the checkpoint a restarted run resumes from (``None`` on a fresh run)."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if not checkpoint:
        return None
    with checkpoint.as_directory() as folder:
        return torch.load(os.path.join(folder, "state.pt"), weights_only=True, map_location=device)


def report_epoch(metrics: dict, state: dict) -> None:
    """Report an epoch's ``metrics`` with ``state`` (saved by the rank-0 worker) as its checkpoint."""
    import ray.train

    with tempfile.TemporaryDirectory() as folder:
        checkpoint = None
        if ray.train.get_context().get_world_rank() == 0:
            torch.save(state, os.path.join(folder, "state.pt"))
            checkpoint = ray.train.Checkpoint.from_directory(folder)
        ray.train.report(metrics, checkpoint=checkpoint)


def fit_on_splits(loop, config: dict, graphs_dir: str, train: pa.Table, val: pa.Table, storage_path: str,
                  run_name: str, score: tuple[str, str], num_workers: int = 1, use_gpu: bool = False,
                  cpus_per_worker: float = 1.0):
    """Run ``loop(config)`` under ``TorchTrainer`` on the model rows ``train`` (shuffled globally,
    every epoch, and split over workers) and ``val`` (materialized, whole on each worker); keep the
    3 best checkpoints by ``score`` (metric, ``min`` or ``max``); restart a failed worker twice."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from pipeline.training.dataset import labelled_dataset

    trainer = TorchTrainer(
        loop, train_loop_config=config,
        scaling_config=ray.train.ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                               resources_per_worker={"CPU": cpus_per_worker}),
        run_config=ray.train.RunConfig(name=run_name, storage_path=os.path.abspath(storage_path)
                                       if "://" not in storage_path else storage_path,
                                       checkpoint_config=ray.train.CheckpointConfig(
                                           num_to_keep=3, checkpoint_score_attribute=score[0],
                                           checkpoint_score_order=score[1]),
                                       failure_config=ray.train.FailureConfig(max_failures=2)),
        # shards hold one task each (files are ingested in name order): a global shuffle, redone
        # every epoch, mixes tasks within each batch
        datasets={"train": labelled_dataset(graphs_dir, train).random_shuffle(),
                  "val": labelled_dataset(graphs_dir, val).materialize()},
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"]))
    return trainer.fit()
