"""What a network of the target architecture computes, batched over networks, and the functional
losses that compare a decoded network with its input (the second seed's: no weight-space term).

* INRs: the MSE of the two renderings on the pixel grid;
* classifiers (CNNs, tabular MLPs): knowledge distillation, the KL divergence of the temperature
  softened softmaxes (``TEMPERATURE``, scaled by its square) at probe inputs drawn from the task's
  *training* data (the seed's CNN probes were its test images, which its accuracy was measured on).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch.nn import functional as F

from pipeline.autoencoder.target import TargetArchitecture

#: the distillation temperature (the seed's)
TEMPERATURE = 0.6


@lru_cache(maxsize=16)
def _template(target: TargetArchitecture) -> torch.nn.Module:
    """A zoo module of the target architecture, whose parameters :func:`outputs` replaces."""
    import json

    from pipeline.zoo.train import build_model, spec_data

    row = target.row()
    data = spec_data(row)
    return build_model({**row, "arch": json.loads(row["arch"])}, data.num_inputs, data.num_outputs).eval()


def outputs(target: TargetArchitecture, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``[B, N, out]``: each of ``B`` networks (``params``: name -> ``[B, *shape]``) at the inputs
    ``x`` (``[N, ...]``, shared)."""
    template = _template(target)
    return torch.func.vmap(lambda p: torch.func.functional_call(template, p, (x,)))(params)


def stack(target: TargetArchitecture, tensors: list[dict]) -> dict[str, torch.Tensor]:
    """Networks' state dicts as batched parameters (name -> ``[B, *shape]``, float32)."""
    return {name: torch.stack([torch.tensor(np.asarray(t[name], np.float32)) for t in tensors])
            for name, _ in target.shapes}


def probe_inputs(target: TargetArchitecture, count: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train, test)`` inputs the losses compare networks at: an INR's training and test pixel
    grids (16x16, 32x32); for a classifier, ``count`` inputs of its task's training split and its
    test inputs."""
    from pipeline.zoo.train import spec_data

    data = spec_data(target.row())
    if target.family == "inr":
        return data.x_train, data.x_test
    return data.x_train[:count], data.x_test


def functional_loss(target: TargetArchitecture, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Scalar loss of decoded networks' outputs ``student`` against their inputs' ``teacher``
    (``[B, N, out]`` each)."""
    if target.family == "inr":
        return F.mse_loss(student, teacher)
    t = TEMPERATURE
    return F.kl_div(F.log_softmax(student.flatten(0, 1) / t, -1), F.log_softmax(teacher.flatten(0, 1) / t, -1),
                    log_target=True, reduction="batchmean") * t * t
