"""The target architecture a decoder writes: one fixed zoo architecture, its parameters as one flat
vector, and the refusal of any checkpoint that is not of it.

A canonical network is an ordinary checkpoint of the target architecture: :meth:`TargetArchitecture.unflatten`
gives its state dict under the zoo's parameter names, which :func:`pipeline.zoo.train.build_model`
loads and the graph builders recognize.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.checkpoint.errors import CheckpointError


class UnsupportedArchitecture(CheckpointError):
    """A checkpoint that is not of the architecture the trained decoder writes."""


@dataclass(frozen=True)
class TargetArchitecture:
    """``family`` and ``activation`` of the zoo models decoded, the catalog fields that rebuild one
    (``spec``: ``family``, ``arch`` as JSON, ``activation``, ``task``), and the state dict's
    ``shapes`` (name -> shape, in order). ``num_params`` values in all."""
    family: str
    activation: str
    spec: tuple[tuple[str, str], ...]
    shapes: tuple[tuple[str, tuple[int, ...]], ...]

    @property
    def num_params(self) -> int:
        return sum(math.prod(shape) for _, shape in self.shapes)

    @property
    def name(self) -> str:
        return f"{self.family}_{self.activation}"

    def row(self) -> dict:
        """The catalog-like row :func:`pipeline.zoo.train.rebuild_model` takes."""
        return {**dict(self.spec), "dropout": 0.0, "image_index": 0}

    def flatten(self, tensors: dict) -> np.ndarray:
        """``[num_params]`` float32: the state dict's parameters in order."""
        return np.concatenate([np.asarray(tensors[name], np.float32).reshape(-1) for name, _ in self.shapes])

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """``flat [..., num_params]`` -> name -> ``[..., *shape]`` (views, differentiable)."""
        out, offset = {}, 0
        for name, shape in self.shapes:
            size = math.prod(shape)
            out[name] = flat[..., offset:offset + size].reshape(*flat.shape[:-1], *shape)
            offset += size
        return out

    def statistics(self, tensors: list[dict]) -> list[tuple[float, float]]:
        """Per tensor of the target, in order, ``(mean, std)`` of its values over the networks
        ``tensors`` (state dicts): what :class:`~pipeline.autoencoder.decoder.WeightDecoder` writes
        standardized weights against."""
        flat = np.stack([self.flatten(t) for t in tensors]).astype(np.float64)
        stats, offset = [], 0
        for _, shape in self.shapes:
            block = flat[:, offset:offset + math.prod(shape)]
            stats.append((float(block.mean()), float(max(block.std(), 1e-6))))
            offset += math.prod(shape)
        return stats

    def per_parameter(self, per_tensor: list[float]) -> torch.Tensor:
        """``[num_params]``: one value per tensor (in order) repeated over its parameters."""
        return torch.cat([torch.full((math.prod(shape),), float(v)) for (_, shape), v in zip(self.shapes, per_tensor)])

    def check(self, tensors: dict, family: str, activation: str, where: str) -> None:
        """Raise :class:`UnsupportedArchitecture` naming ``where`` unless a model of this family,
        activation, parameter names and shapes, with finite weights."""
        if (family, activation) != (self.family, self.activation):
            raise UnsupportedArchitecture(where, f"a {family} model with {activation} activations; the decoder "
                                                 f"writes {self.family} models with {self.activation}")
        names = {name: tuple(np.shape(tensors[name])) for name in tensors if name in dict(self.shapes)}
        if set(tensors) != set(dict(self.shapes)) or names != dict(self.shapes):
            raise UnsupportedArchitecture(where, f"parameters {sorted(tensors)[:4]}... do not match the target "
                                                 f"architecture ({self.num_params} parameters)")
        bad = next((n for n, t in tensors.items() if not np.isfinite(np.asarray(t, np.float32)).all()), None)
        if bad is not None:
            raise UnsupportedArchitecture(where, f"tensor {bad!r} has NaN or infinite values")


def target_of(row: dict) -> TargetArchitecture:
    """The target architecture of a zoo model's catalog ``row``."""
    from pipeline.zoo.train import build_model, spec_data

    spec = {"family": row["family"], "arch": row["arch"] if isinstance(row["arch"], str) else json.dumps(
        row["arch"], sort_keys=True), "activation": row["activation"], "task": row["task"]}
    data = spec_data({**spec, "image_index": 0})
    model = build_model({**spec, "arch": json.loads(spec["arch"]), "dropout": 0.0}, data.num_inputs, data.num_outputs)
    shapes = tuple((name, tuple(t.shape)) for name, t in model.state_dict().items())
    return TargetArchitecture(row["family"], row["activation"], tuple(sorted(spec.items())), shapes)
