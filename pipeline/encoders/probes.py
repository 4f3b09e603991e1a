"""Functional probes: what a network computes at fixed inputs, as features of its output neurons.

A network's outputs at given inputs are unchanged by every symmetry of its hidden neurons (coupled
permutations, positive scalings, sign flips), so they are exactly invariant features, and they
change with the function, e.g. under an uncoupled permutation. Networks with the same input width
share one fixed set of probe inputs: by default, dense inputs drawn from ``N(0, I)`` (the zoo's
inputs are standardized) and images of smooth Gaussian noise for convolutional inputs; an encoder
may carry :class:`ProbeInputs`, unlabeled samples of the inputs its networks read (the zoo writes
them as ``probe_inputs.npz``), which then replace the defaults for networks of their input shape.

Executed here: computational graphs of dense layers and 2-D convolutions with odd square kernels
(MLPs, residual MLPs, Small-CNN-Zoo CNNs) without normalization, with a known elementwise
activation. Activation placement follows the builders: after every hidden group and after a
residual stream that no skip connection feeds (the stem's output). Convolutions run with stride 1
and "same" zero padding on the probe images, and a dense layer after a
convolution reads its global average pool. Stride and padding are not in the weights: for a
network built otherwise the values are not its outputs, but they stay exactly invariant functions
of its weights. Other graphs (flattened feature maps, attention, sine networks whose frequency
``w0`` the weights do not record) get no probe features, nor do networks whose probe pass would
cost more than ``MAX_PROBE_MACS``.
"""
from __future__ import annotations

import io
import math
from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from pipeline.checkpoint.fs import read_buffer, resolve
from pipeline.graph.schema import NODE_KINDS

if TYPE_CHECKING:
    from pipeline.encoders.inputs import Block, Group

NUM_PROBES = 64
PROBE_SIDE = 8
#: probe passes costing more multiply-adds (about a second on one core in float64) are skipped:
#: large CNNs, whose every weight is applied at every pixel of every probe image
MAX_PROBE_MACS = 1e10
ACTIVATIONS = {"relu": F.relu, "tanh": torch.tanh, "gelu": F.gelu, "silu": F.silu, "sigmoid": torch.sigmoid,
               "elu": F.elu, "softplus": F.softplus}
_HIDDEN, _STREAM, _OUTPUT = (NODE_KINDS.index(k) for k in ("hidden", "stream", "output"))


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
    :mod:`pipeline.checkpoint.fs`). No pickled objects are read."""
    fs, path = resolve(uri)
    data = bytes(read_buffer(fs, path))
    if not data.startswith(b"PK"):
        raise ValueError(f"{uri}: not a .npz archive")
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


DEFAULT_PROBES = ProbeInputs()


def _is_conv(block: "Block") -> bool:
    return block.kind == "linear" and len(block.kernel) == 2 and block.kernel[0] == block.kernel[1] \
        and block.kernel[0] % 2 == 1


def executable(groups: list["Group"], blocks: list["Block"], activation: str) -> bool:
    """Whether :func:`probe_values` can run this graph's layers (shapes and the cost of the pass
    are checked as it runs)."""
    return (activation in ACTIVATIONS and all(g.norm is None for g in groups)
            and sum(g.kind == _OUTPUT for g in groups) == 1
            and all(b.kind == "residual" or (b.kind == "linear" and not b.kernel) or _is_conv(b) for b in blocks))


def _message(block: "Block", x: torch.Tensor) -> torch.Tensor | None:
    """What ``block`` sends from its source's values ``x`` (``[P, C]`` or ``[P, C, H, W]``), or
    ``None`` when a convolution would read pooled values."""
    if block.kind == "residual":
        return x
    if _is_conv(block):
        if x.ndim != 4:
            return None
        k = block.kernel[0]
        return F.conv2d(x, block.weight.double().reshape(*block.weight.shape[:2], k, k), padding=k // 2)
    if x.ndim == 4:  # a dense layer after a convolution reads the global average pool
        x = x.mean((2, 3))
    return x @ block.weight[:, :, 0].double().T


@torch.no_grad()
def probe_values(groups: list["Group"], blocks: list["Block"], order: list[int], activation: str,
                 probes: ProbeInputs | None = None) -> dict[int, torch.Tensor] | None:
    """Every group's values at the probe inputs, after its activation (float64, ``[NUM_PROBES, size]``
    or ``[NUM_PROBES, size, H, W]`` for convolutions), or ``None`` when the graph is not
    :func:`executable` or its pass would cost more than ``MAX_PROBE_MACS``. ``probes``: the
    encoder's :class:`ProbeInputs` (default: none of its own). Equivariant: a symmetry of the hidden
    neurons permutes, scales or flips their values the same way, and leaves the inputs' and
    outputs' unchanged."""
    if not executable(groups, blocks, activation):
        return None
    probes = DEFAULT_PROBES if probes is None else probes
    sources = [i for i in order if all(b.dst != i for b in blocks)]
    values: dict[int, torch.Tensor] = {
        i: probes.images(groups[i].size) if any(_is_conv(b) for b in blocks if b.src == i)
        else probes.dense(groups[i].size) for i in sources}
    pixels = max((x.shape[2] * x.shape[3] for x in values.values() if x.ndim == 4), default=1)
    if NUM_PROBES * sum(b.weight.numel() * (pixels if _is_conv(b) else 1)
                        for b in blocks if b.weight is not None) > MAX_PROBE_MACS:
        return None
    act = ACTIVATIONS[activation]
    for i in order:
        incoming = [b for b in blocks if b.dst == i]
        g = groups[i]
        if not incoming:
            continue
        messages = [_message(b, values[b.src]) for b in incoming]
        if any(m is None for m in messages) or len({m.shape for m in messages}) > 1:
            return None
        x = sum(messages)
        if g.bias is not None:
            x = x + g.bias.double().reshape(-1, *[1] * (x.ndim - 2))
        if g.kind == _HIDDEN or (g.kind == _STREAM and all(b.kind != "residual" for b in incoming)):
            x = act(x)
        values[i] = x
    output = next(i for i, g in enumerate(groups) if g.kind == _OUTPUT)
    return values if values[output].ndim == 2 else None


def probe_outputs(groups: list["Group"], values: dict[int, torch.Tensor] | None) -> torch.Tensor | None:
    """``[n_out, NUM_PROBES]``: each output neuron's values at the probe inputs (from
    :func:`probe_values`), squashed by ``asinh`` so logits and regression outputs share a range;
    ``None`` without values. Invariant to every hidden-neuron symmetry of the network."""
    if values is None:
        return None
    output = next(i for i, g in enumerate(groups) if g.kind == _OUTPUT)
    return torch.asinh(values[output]).T.contiguous()


NUM_PROFILE = 15
_QUANTILES = (0.1, 0.5, 0.9)


def output_profile(outputs: torch.Tensor) -> torch.Tensor:
    """``[NUM_PROFILE]``: how a network spreads its outputs at the probe inputs over its output
    neurons, reading them as a classifier's logits. ``outputs``: :func:`probe_outputs`' ``[n_out,
    NUM_PROBES]`` (asinh-squashed; undone here). Per probe: the softmax entropy over outputs (divided
    by ``log n_out``), asinh of the top-1 minus top-2 margin and of the spread (std) over outputs,
    each summarized by its 10/50/90% quantiles over probes (9); then the shares of probes whose
    argmax is each of the five most chosen outputs, sorted (5), and the entropy of those choices
    (1). A function of the outputs, so exactly invariant to every hidden-neuron symmetry; all zero
    but the top share (1) for a single output."""
    logits = torch.sinh(outputs.T)                                      # [NUM_PROBES, n_out]
    count, n_out = logits.shape
    quantiles = torch.tensor(_QUANTILES, dtype=logits.dtype, device=logits.device)
    if n_out > 1:
        log_p = logits.log_softmax(1)
        entropy = -(log_p.exp() * log_p).sum(1) / math.log(n_out)
        top2 = logits.topk(2, 1).values
        per_probe = torch.stack([entropy, torch.asinh(top2[:, 0] - top2[:, 1]), torch.asinh(logits.std(1))])
    else:
        per_probe = logits.new_zeros(3, count)
    chosen = torch.bincount(logits.argmax(1), minlength=max(n_out, 5)).to(logits.dtype) / count
    shares = chosen.sort(descending=True).values
    choice_entropy = -(shares * torch.log(shares.clamp_min(1e-30))).sum()
    return torch.cat([torch.quantile(per_probe, quantiles, dim=1).T.reshape(-1), shares[:5], choice_entropy[None]])
