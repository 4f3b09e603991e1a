"""Training the canonicalization autoencoder under Ray Train, with the encoder training's conventions
(:mod:`pipeline.training.trainer`): ``TorchTrainer(train_loop, ScalingConfig(num_workers, use_gpu))``
on CPU or GPU workers, a checkpoint reported every epoch, a restart with the same run name and
storage path resuming from the last one, splits that hold out whole models.

Loss: :func:`pipeline.autoencoder.functional.functional_loss` of each decoded network against the
network it encodes, at the target's training probe inputs. AdamW, a linear warm-up over
``warmup_steps``, gradient clipping (the seed's). Validation: the same loss on the ``val`` split and,
for INRs, the pixel MSE on the 32x32 test grid.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from pipeline.autoencoder.functional import functional_loss, outputs, probe_inputs, stack
from pipeline.autoencoder.model import Autoencoder
from pipeline.autoencoder.target import TargetArchitecture
from pipeline.graph.rows import records_to_graphs
from pipeline.training.ray_train import fit_on_splits, report_epoch, restored_state


#: training networks the decoder's per-tensor weight statistics are estimated from
STATISTICS_MODELS = 512


@dataclass
class AutoencoderConfig:
    target: dict = field(default_factory=dict)   # TargetArchitecture fields (see target_config)
    encoder: str = "scale_gmn"
    latent: int = 128
    epochs: int = 50
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 1000
    clip: float = 1.0
    probes: int = 256        # classifier probe inputs (training split)
    seed: int = 0
    weight_stats: list = field(default_factory=list)  # per target tensor (mean, std) over training networks


def target_config(target: TargetArchitecture) -> dict:
    return {"family": target.family, "activation": target.activation, "spec": [list(p) for p in target.spec],
            "shapes": [[n, list(s)] for n, s in target.shapes]}


def config_target(config: dict) -> TargetArchitecture:
    return TargetArchitecture(config["family"], config["activation"], tuple(tuple(p) for p in config["spec"]),
                              tuple((n, tuple(s)) for n, s in config["shapes"]))


def of_target(models: pa.Table, target: TargetArchitecture) -> pa.Table:
    """The model rows of ``models`` (see :func:`pipeline.training.dataset.labelled_models`) of the
    target architecture (family, activation, arch; and task, for classifiers)."""
    spec = dict(target.spec)
    keep = pc.and_(pc.equal(models.column("family"), target.family), pc.equal(models.column("activation"),
                                                                              target.activation))
    keep = pc.and_(keep, pc.equal(models.column("arch"), spec["arch"]))
    if target.family != "inr":
        keep = pc.and_(keep, pc.equal(models.column("task"), spec["task"]))
    return models.filter(keep)


def batch_inputs(model: Autoencoder, graphs: list, x: torch.Tensor, device, cache: dict | None = None
                 ) -> tuple[list, torch.Tensor]:
    """The prepared encoder inputs of a batch of graphs and their networks' outputs at ``x``
    (``[B, N, out]``, the teacher), kept in ``cache`` by content id when given (they do not change
    from epoch to epoch: no augmentation)."""
    target = model.target
    missing = [g for g in graphs if cache is None or g.info["content_id"] not in cache]
    if missing:
        with torch.no_grad():
            teacher = outputs(target, {k: v.to(device) for k, v in stack(target, [g.tensors for g in missing]).items()},
                              x)
        fresh = {g.info["content_id"]: (model.prepare(g).to(device), t) for g, t in zip(missing, teacher)}
        if cache is None:
            return [fresh[g.info["content_id"]][0] for g in graphs], teacher
        cache.update(fresh)
    return [cache[g.info["content_id"]][0] for g in graphs], torch.stack([cache[g.info["content_id"]][1] for g in graphs])


def batch_loss(model: Autoencoder, graphs: list, x: torch.Tensor, device, forward=None, cache: dict | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss, decoded [B, P])`` of a batch of input graphs; ``forward``: the model as training
    wraps it (distributed), default the model; ``cache``: see :func:`batch_inputs`."""
    target = model.target
    prepared, teacher = batch_inputs(model, graphs, x, device, cache)
    _, decoded = (forward or model)(prepared)
    return functional_loss(target, outputs(target, target.unflatten(decoded), x), teacher), decoded


def evaluate(model: Autoencoder, graphs: list, batch_size: int = 64) -> dict:
    """Validation figures: the training loss and, for INRs, the pixel MSE on the test grid."""
    target, device = model.target, next(model.parameters()).device
    x_train, x_test = (x.to(device) for x in probe_inputs(target))
    losses, pixel = [], []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(graphs), batch_size):
            chunk = graphs[i:i + batch_size]
            loss, decoded = batch_loss(model, chunk, x_train, device)
            losses.append((float(loss), len(chunk)))
            if target.family == "inr":
                teacher = outputs(target, {k: v.to(device) for k, v in stack(target, [g.tensors for g in chunk]).items()},
                                  x_test)
                student = outputs(target, target.unflatten(decoded), x_test)
                pixel.append((float(((student - teacher) ** 2).mean()), len(chunk)))
    model.train()
    mean = lambda pairs: float(sum(v * n for v, n in pairs) / max(sum(n for _, n in pairs), 1))  # noqa: E731
    return {"val_loss": mean(losses), **({"val_pixel_mse": mean(pixel)} if pixel else {})}


def train_loop(config_dict: dict) -> None:
    """Ray Train worker loop."""
    import ray.train
    import ray.train.torch

    config = AutoencoderConfig(**config_dict)
    torch.manual_seed(config.seed)
    target = config_target(config.target)
    model = Autoencoder(target, config.encoder, config.latent, config.weight_stats)
    wrapped = ray.train.torch.prepare_model(model, parallel_strategy_kwargs={"find_unused_parameters": True})
    optimizer = torch.optim.AdamW(wrapped.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / config.warmup_steps))
    device = ray.train.torch.get_device()
    start_epoch = 0
    state = restored_state(device)
    if state:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        start_epoch = state["epoch"] + 1

    x_train = probe_inputs(target, config.probes)[0].to(device)
    cache: dict = {}  # content id -> (prepared input, teacher outputs), built in the first epoch
    train_shard = ray.train.get_dataset_shard("train")
    val_graphs = [g for batch in ray.train.get_dataset_shard("val").iter_batches(batch_format="pyarrow", batch_size=None)
                  for g in records_to_graphs(batch)]
    for epoch in range(start_epoch, config.epochs):
        losses = []
        for table in train_shard.iter_batches(batch_size=config.batch_size, batch_format="pyarrow",
                                              local_shuffle_buffer_size=4 * config.batch_size,
                                              local_shuffle_seed=config.seed + epoch):
            loss, _ = batch_loss(model, list(records_to_graphs(table)), x_train, device, wrapped, cache)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
        metrics = {"epoch": epoch, "resumed_at_epoch": start_epoch,
                   "loss": float(np.mean(losses)) if losses else float("nan"), **evaluate(model, val_graphs)}
        report_epoch(metrics, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                               "schedule": schedule.state_dict(), "epoch": epoch, "config": asdict(config)})


def fit_autoencoder(graphs_dir: str, models: pa.Table, config: AutoencoderConfig, storage_path: str, run_name: str,
                    num_workers: int = 1, use_gpu: bool = False, cpus_per_worker: float = 1.0):
    """Train on the ``train`` split of ``models`` of the target architecture, validating on ``val``;
    the decoder's weight statistics come from up to ``STATISTICS_MODELS`` training networks. Returns the Ray Train result (the best checkpoint by validation loss is kept too:
    ``result.get_best_checkpoint("val_loss", "min")``)."""
    from pipeline.training.dataset import labelled_table, split

    target = config_target(config.target)
    models = of_target(models, target)
    train, val = split(models, "train"), split(models, "val")
    if not train.num_rows or not val.num_rows:
        raise ValueError(f"no {target.name} models in the train or val split ({train.num_rows}, {val.num_rows})")
    sample = records_to_graphs(labelled_table(graphs_dir, train.slice(0, STATISTICS_MODELS)))
    config = replace(config, weight_stats=target.statistics([g.tensors for g in sample]))
    return fit_on_splits(train_loop, asdict(config), graphs_dir, train, val, storage_path, run_name, ("val_loss", "min"),
                         num_workers, use_gpu, cpus_per_worker)


def load_autoencoder(path: str) -> tuple[Autoencoder, AutoencoderConfig]:
    """An exported autoencoder (eval mode) and its config, from a state file or a training
    checkpoint folder (path or URI)."""
    import io

    from pipeline.encoders.state import state_file
    from pipeline.storage import read_bytes

    state = torch.load(io.BytesIO(read_bytes(state_file(path))), weights_only=True, map_location="cpu")
    config = AutoencoderConfig(**state["config"])
    model = Autoencoder(config_target(config.target), config.encoder, config.latent, config.weight_stats)
    model.load_state_dict(state["model"])
    return model.eval(), config


def save_autoencoder(model: Autoencoder, config: AutoencoderConfig, path: str) -> None:
    """The model and its config (no optimizer state), as one file (path or URI)."""
    import io

    from pipeline.storage import write_file

    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "config": asdict(config)}, buffer)
    write_file(path, buffer.getvalue())
