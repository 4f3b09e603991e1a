"""Probe inputs: the fixed inputs at which the encoders run every network they can execute.

Networks with the same input width share one set: by default, dense inputs drawn from ``N(0, I)``
(the zoo's inputs are standardized) and images of smooth Gaussian noise for convolutional inputs; an
encoder may carry :class:`ProbeInputs`, unlabeled samples of the inputs its networks read (a zoo
writes them as ``probe_inputs.npz``), which then replace the defaults for networks of their input
shape. What the networks compute there is :mod:`pipeline.encoders.executor`'s business.
"""
from __future__ import annotations

import io
from collections.abc import Mapping
from functools import lru_cache

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from pipeline.constants import NUM_PROBES
from pipeline.storage import read_bytes

PROBE_SIDE = 8


def probe_inputs(width: int, count: int = NUM_PROBES) -> torch.Tensor:
    """``[count, width]`` float64 probe inputs, the same for every network of input ``width``."""
    generator = torch.Generator().manual_seed(7919 * width + count)
    return torch.randn(count, width, generator=generator, dtype=torch.float64)


@lru_cache(maxsize=64)
def probe_images(channels: int, count: int = NUM_PROBES) -> torch.Tensor:
    """``[count, channels, PROBE_SIDE, PROBE_SIDE]`` float64 probe images, the same for every network
    of ``channels`` input channels: white noise blurred by a Gaussian (sigma 1 pixel), each image
    channel standardized (smooth images tell trained filters apart better than white noise).
    Cached: callers must not modify it."""
    generator = torch.Generator().manual_seed(104729 * channels + count)
    noise = torch.randn(count * channels, 1, PROBE_SIDE, PROBE_SIDE, generator=generator, dtype=torch.float64)
    taps = torch.exp(-0.5 * torch.arange(-2, 3, dtype=torch.float64) ** 2)
    kernel = (taps[:, None] * taps[None, :] / taps.sum() ** 2)[None, None]
    smooth = F.conv2d(noise, kernel, padding=2).reshape(count, channels, PROBE_SIDE, PROBE_SIDE)
    smooth = smooth - smooth.mean((2, 3), keepdim=True)
    return smooth / smooth.std((2, 3), keepdim=True)


class ProbeInputs(nn.Module):
    """An encoder's own probe inputs: unlabeled samples of what its networks read, ``[NUM_PROBES,
    width]`` for dense inputs of that width or ``[NUM_PROBES, channels, H, W]`` for images of that
    many channels, at most one set per width or channel count. Networks of other inputs get the
    defaults (:func:`probe_inputs`, :func:`probe_images`). Held as buffers, so they are saved and
    loaded with the encoder's state (and change its version); empty by default."""

    def set(self, arrays: Mapping[str, np.ndarray | torch.Tensor]) -> "ProbeInputs":
        """Replace the probe sets by ``arrays`` (names are free; each array's rows are samples, the
        first ``NUM_PROBES`` are kept). Raises ``ValueError`` naming the array and the reason."""
        tensors = {}
        for name, array in arrays.items():
            t = torch.as_tensor(np.asarray(array, dtype=np.float64))
            if t.ndim not in (2, 4) or len(t) < NUM_PROBES or 0 in t.shape:
                raise ValueError(f"probe inputs {name!r}: expected [>= {NUM_PROBES}, width] or "
                                 f"[>= {NUM_PROBES}, channels, height, width], got {list(t.shape)}")
            if not torch.isfinite(t).all():
                raise ValueError(f"probe inputs {name!r}: non-finite values")
            key = f"dense_{t.shape[1]}" if t.ndim == 2 else f"images_{t.shape[1]}"
            if key in tensors:
                what = f"dense inputs of width {t.shape[1]}" if t.ndim == 2 else f"images of {t.shape[1]} channels"
                raise ValueError(f"probe inputs {name!r}: a second set for {what}")
            tensors[key] = t[:NUM_PROBES].clone()
        self._buffers.clear()
        for key, t in sorted(tensors.items()):
            self.register_buffer(key, t)
        return self

    def dense(self, width: int) -> torch.Tensor:
        """``[NUM_PROBES, width]`` float64 probe inputs for a dense input layer."""
        t = self._buffers.get(f"dense_{width}")
        return probe_inputs(width) if t is None else t.detach().cpu().double()

    def images(self, channels: int) -> torch.Tensor:
        """``[NUM_PROBES, channels, H, W]`` float64 probe images for a convolutional input layer."""
        t = self._buffers.get(f"images_{channels}")
        return probe_images(channels) if t is None else t.detach().cpu().double()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # the saved sets decide which buffers exist, so a fresh encoder loads any encoder's probes
        self.set({k[len(prefix):]: v for k, v in state_dict.items()
                  if k.startswith(prefix) and "." not in k[len(prefix):]})
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def probe_inputs_of(module: nn.Module) -> ProbeInputs | None:
    """The :class:`ProbeInputs` an encoder (or a model wrapping one) carries; ``None`` for encoders
    that read no probes."""
    return next((m for m in module.modules() if isinstance(m, ProbeInputs)), None)


def load_probe_inputs(uri: str) -> dict[str, np.ndarray]:
    """The arrays of a ``.npz`` file of probe inputs, by path or URI (``s3://...``; see
    :mod:`pipeline.storage`). No pickled objects are read."""
    data = read_bytes(uri)
    if not data.startswith(b"PK"):
        raise ValueError(f"{uri}: not a .npz archive")
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


DEFAULT_PROBES = ProbeInputs()
