"""The output profile: how a network spreads its outputs at the probe inputs over its output neurons."""
from __future__ import annotations

import math

import torch

from pipeline.numerics import TINY

NUM_PROFILE = 15
_QUANTILES = (0.1, 0.5, 0.9)


def output_profile(outputs: torch.Tensor) -> torch.Tensor:
    """``[NUM_PROFILE]``: how a network spreads its outputs at the probe inputs over its output
    neurons, reading them as a classifier's logits. ``outputs``: :func:`pipeline.encoders.executor.probe_outputs`'
    ``[n_out, NUM_PROBES]`` (asinh-squashed; undone here). Per probe: the softmax entropy over outputs (divided
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
    choice_entropy = -(shares * torch.log(shares.clamp_min(TINY))).sum()
    return torch.cat([torch.quantile(per_probe, quantiles, dim=1).T.reshape(-1), shares[:5], choice_entropy[None]])
