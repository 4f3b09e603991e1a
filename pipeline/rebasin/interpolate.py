"""Linear interpolation between two models of one architecture: loss/metric paths, the loss barrier,
merged checkpoints and path plots.

``theta(alpha) = (1 - alpha) theta_A + alpha theta_B``; between A and B itself this is the *naive*
path, between A and B aligned to A (same function as B) the *re-basin* path. The barrier is
``max_alpha [L(theta(alpha)) - ((1 - alpha) L(A) + alpha L(B))]``: zero for a linearly connected pair.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.checkpoint import save_checkpoint
from pipeline.checkpoint.dtypes import is_float
from pipeline.evaluation.report import save_figure
from pipeline.graph.layouts import checkpoint_tensors
from pipeline.zoo.train import rebuild_model

ALPHAS = np.linspace(0.0, 1.0, 25)


@dataclass
class Path:
    """Loss and metric (accuracy, R^2 or PSNR, see ``metric_name``) at each ``alphas`` point."""
    alphas: np.ndarray
    loss: np.ndarray
    metric: np.ndarray
    metric_name: str

    @property
    def barrier(self) -> float:
        chord = (1 - self.alphas) * self.loss[0] + self.alphas * self.loss[-1]
        return float(np.max(self.loss - chord))


def interpolate(tensors_a: dict, tensors_b: dict, alpha: float) -> dict[str, np.ndarray]:
    """``(1 - alpha) A + alpha B`` for floating tensors (computed in float64, A's dtype), A's others."""
    out = {}
    for name, a in tensors_a.items():
        a = np.asarray(a)
        if not is_float(a.dtype):
            out[name] = a
            continue
        mixed = (1 - alpha) * a.astype(np.float64) + alpha * np.asarray(tensors_b[name], np.float64)
        out[name] = mixed.astype(a.dtype)
    return out


class ZooEvaluator:
    """Loss and metric of a zoo architecture on its task's test split (an INR: on the test grid of
    model A's image). ``row``: the model's catalog row (see :func:`pipeline.zoo.train.rebuild_model`)."""

    def __init__(self, row: dict, tensors: dict):
        self.model, self.data = rebuild_model(row, tensors)
        self.metric_name = self.data.metric_name

    @torch.no_grad()
    def __call__(self, tensors: dict) -> tuple[float, float]:
        self.model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in tensors.items()})
        out = self.model(self.data.x_test)
        return float(self.data.loss(out, self.data.y_test)), self.data.metric(out, self.data.y_test)

    def path(self, tensors_a: dict, tensors_b: dict, alphas: np.ndarray = ALPHAS) -> Path:
        """The straight path from A to B."""
        return self.along([interpolate(tensors_a, tensors_b, float(a)) for a in alphas], alphas)

    def along(self, models: list[dict], alphas: np.ndarray = ALPHAS) -> Path:
        """The path through ``models`` (state dicts), one per point of ``alphas`` (e.g. networks
        decoded along a line in latent space)."""
        values = np.array([self(tensors) for tensors in models])
        return Path(np.asarray(alphas), values[:, 0], values[:, 1], self.metric_name)


def export_merged(tensors_a: dict, tensors_b: dict, alpha: float, path: str, parents: dict[str, str],
                  metadata: dict[str, str] | None = None) -> None:
    """Save the model at ``alpha`` on the path as safetensors (graph tensors back in the checkpoint's
    layout, :func:`~pipeline.graph.layouts.checkpoint_tensors`); ``__metadata__``: ``metadata`` (e.g. A's,
    so the merged model is built like its parents) plus ``merge_alpha`` and ``merged_from`` (JSON of
    ``parents``, e.g. ``{"a": id_a, "b": id_b, "b_aligned_to": id_a}``)."""
    meta = {**(metadata or {}), "merge_alpha": repr(float(alpha)), "merged_from": json.dumps(parents, sort_keys=True)}
    save_checkpoint(checkpoint_tensors(interpolate(tensors_a, tensors_b, alpha)), path, meta)


def plot_paths(paths: dict[str, Path], png: str, title: str = "") -> None:
    """Loss and metric against alpha, one line per path (e.g. ``naive`` and ``re-basin``), as a PNG
    (path or URI)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    for label, p in paths.items():
        left.plot(p.alphas, p.loss, marker=".", label=f"{label} (barrier {p.barrier:.3g})")
        right.plot(p.alphas, p.metric, marker=".", label=label)
    first = next(iter(paths.values()))
    left.set(xlabel="alpha", ylabel="test loss")
    right.set(xlabel="alpha", ylabel=first.metric_name)
    left.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, png, dpi=100)
