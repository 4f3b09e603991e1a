"""Train one zoo model from its spec and save it as a safetensors checkpoint with its metadata."""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from pipeline.checkpoint import save_checkpoint
from pipeline.storage import join
from pipeline.zoo.models import MLP, ResMLP, Siren, SmallCNN, TinyBert
from pipeline.zoo.tasks import digit_image, load_task


def build_model(spec: dict, num_inputs: int, num_outputs: int) -> torch.nn.Module:
    arch, act, family = spec["arch"], spec["activation"], spec["family"]
    if family == "mlp":
        return MLP(num_inputs, arch["widths"], num_outputs, act, spec["dropout"])
    if family == "resnet":
        return ResMLP(num_inputs, arch["dim"], arch["hidden"], arch["num_blocks"], num_outputs, act, spec["dropout"])
    if family == "cnn":
        return SmallCNN(1, arch["channels"], arch["num_convs"], num_outputs, act, spec["dropout"])
    if family == "inr":
        return Siren(arch["widths"])
    if family == "transformer":
        return TinyBert(16, 12, arch["dim"], arch["heads"], arch["ffn"], arch["num_layers"], num_outputs,
                        spec["dropout"])
    raise KeyError(family)


def _initialize(model: torch.nn.Module, init: str) -> None:
    if init in ("default", "siren"):
        return
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight") and p.ndim >= 2:
                (torch.nn.init.xavier_normal_ if init == "xavier" else torch.nn.init.orthogonal_)(p)


@dataclass
class SpecData:
    """A spec's training and test tensors, shaped for its family, and what they are."""
    kind: str            # classification | regression | sequence | inr
    dataset: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_inputs: int
    num_outputs: int
    label: int           # the digit of an INR's image, else -1

    @property
    def loss(self):
        return F.cross_entropy if self.kind in ("classification", "sequence") else F.mse_loss

    @property
    def metric_name(self) -> str:
        return {"classification": "accuracy", "sequence": "accuracy", "inr": "psnr"}.get(self.kind, "r2")

    def metric(self, out: torch.Tensor, y: torch.Tensor) -> float:
        """The task's metric of outputs ``out`` against targets ``y`` (see :attr:`metric_name`)."""
        if self.kind in ("classification", "sequence"):
            return float((out.argmax(1) == y).float().mean())
        if self.kind == "inr":  # PSNR of values in [-1, 1]
            return float(10 * math.log10(4.0 / max(F.mse_loss(out, y).item(), 1e-12)))
        return float(1 - F.mse_loss(out, y) / y.var(unbiased=False).clamp_min(1e-12))  # R^2


def spec_data(spec: dict) -> SpecData:
    """The data a zoo model of ``spec`` is trained and tested on."""
    if spec["family"] == "inr":
        *arrays, label = digit_image(spec["image_index"])
        x_tr, y_tr, x_te, y_te = map(torch.from_numpy, arrays)
        return SpecData("inr", "sklearn.digits", x_tr, y_tr, x_te, y_te, 2, 1, label)
    data = load_task(spec["task"])
    x_tr, y_tr, x_te, y_te = (torch.from_numpy(a) for a in (data.x_train, data.y_train, data.x_test, data.y_test))
    if data.kind == "sequence":
        x_tr, x_te = x_tr.long(), x_te.long()
    if spec["family"] in ("mlp", "resnet"):
        x_tr, x_te = x_tr.flatten(1), x_te.flatten(1)
    return SpecData(data.kind, data.dataset, x_tr, y_tr, x_te, y_te, data.num_inputs, data.num_outputs, -1)


def rebuild_model(row: dict, tensors: dict) -> tuple[torch.nn.Module, SpecData]:
    """A zoo model rebuilt from its catalog ``row`` (family, arch, activation, dropout, task,
    image_index) holding ``tensors`` (name -> array), in eval mode, with the data it was trained on."""
    import numpy as np

    spec = {**row, "arch": json.loads(row["arch"]) if isinstance(row["arch"], str) else row["arch"]}
    data = spec_data(spec)
    model = build_model(spec, data.num_inputs, data.num_outputs)
    model.load_state_dict({n: torch.from_numpy(np.array(t, dtype=np.float32)) for n, t in tensors.items()})
    return model.eval(), data


def evaluate_model(model: torch.nn.Module, data: SpecData) -> tuple[float, float]:
    """``(train metric, test metric)`` of a model on its task (accuracy, R^2 or PSNR)."""
    model.eval()
    with torch.no_grad():
        return data.metric(model(data.x_train), data.y_train), data.metric(model(data.x_test), data.y_test)


def train_model(spec: dict, out_dir: str) -> dict:
    """Train ``spec``, write ``<out_dir>/models/<model_id>.safetensors``; return its catalog row."""
    started = time.perf_counter()
    torch.manual_seed(spec["seed"])
    data = spec_data(spec)
    kind, dataset, label = data.kind, data.dataset, data.label
    x_tr, y_tr = data.x_train, data.y_train
    num_in, num_out = data.num_inputs, data.num_outputs
    model = build_model(spec, num_in, num_out)
    _initialize(model, spec["init"])
    opt = torch.optim.AdamW(model.parameters(), lr=spec["lr"], weight_decay=spec["weight_decay"])
    loss_fn = data.loss
    gen = torch.Generator().manual_seed(spec["seed"])
    n, bs = len(x_tr), spec["batch_size"]
    model.train()
    for _ in range(spec["epochs"]):
        order = torch.randperm(n, generator=gen) if kind != "inr" else torch.arange(n)
        for start in range(0, n, bs):
            idx = order[start:start + bs]
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x_tr[idx]), y_tr[idx]).backward()
            opt.step()
    train_metric, test_metric = evaluate_model(model, data)

    path = join("models", f"{spec['model_id']}.safetensors")
    num_params = sum(p.numel() for p in model.parameters())
    row = {"model_id": spec["model_id"], "path": path, "task": spec["task"], "dataset": dataset,
           "family": spec["family"], "activation": spec["activation"], "label": label,
           "image_index": spec.get("image_index", -1),
           "seed": spec["seed"], "lr": spec["lr"], "weight_decay": spec["weight_decay"], "init": spec["init"],
           "dropout": spec["dropout"], "epochs": spec["epochs"], "batch_size": spec["batch_size"],
           "arch": json.dumps(spec["arch"], sort_keys=True), "hparams_key": spec["hparams_key"],
           "metric_name": data.metric_name, "train_metric": train_metric, "test_metric": test_metric,
           "num_params": num_params, "train_seconds": time.perf_counter() - started}
    metadata = {k: str(row[k]) for k in ("model_id", "task", "dataset", "family", "activation", "arch",
                                         "metric_name", "test_metric")}
    if spec["family"] == "transformer":
        metadata["num_attention_heads"] = str(spec["arch"]["heads"])
    save_checkpoint(model.state_dict(), join(out_dir, path), metadata)
    return row


def train_models(specs: list[dict], out_dir: str) -> list[dict]:
    """Train several specs in this process, single-threaded (one Ray task per call)."""
    torch.set_num_threads(1)
    return [train_model(spec, out_dir) for spec in specs]

