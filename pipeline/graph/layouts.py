"""Tensor layouts: checkpoints that store a dense layer other than as one ``[out, in]`` matrix, seen
by the graph through views that do, with the exact way back.

GPT-2 (``transformers``' ``Conv1D``) stores its dense weights ``[in, out]`` and fuses the attention's
query, key and value projections into one ``c_attn`` (``[d, 3 d]``, bias ``[3 d]``). Its graph
reads:

* ``<layer>.attn.c_attn.{q,k,v}.{weight,bias}``: the three thirds of ``c_attn``, weights transposed
  to ``[d, d]``;
* every other ``Conv1D`` weight (``attn.c_proj``, ``mlp.c_fc``, ``mlp.c_proj``) transposed, under its
  own name.

The views share the checkpoint's memory (numpy views, no copy). :func:`checkpoint_tensors` puts a
graph's tensors back into the checkpoint's layout (exactly: a round trip returns the same bytes),
recognizing the graph layout by its names, so that aligned, canonical or merged weights load back
into the real model.
"""
from __future__ import annotations

import re

import numpy as np

_FUSED = re.compile(r"^(.*\.attn\.c_attn)\.(weight|bias)$")
_CONV1D = re.compile(r"^(.*\.(?:attn|mlp)\.(?:c_proj|c_fc))\.weight$")
_SPLIT = re.compile(r"^(.*\.attn\.c_attn)\.([qkv])\.(weight|bias)$")
PARTS = ("q", "k", "v")


def is_gpt2(names) -> bool:
    """Whether a state dict's names are GPT-2's (``wte.weight`` and fused ``attn.c_attn``)."""
    names = list(names)
    return any(n.endswith("wte.weight") for n in names) and any(_FUSED.match(n) for n in names)


def graph_tensors(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The tensors in the graph's layout (views; the checkpoint's order kept, each fused tensor
    replaced by its parts). ``ValueError`` when a fused tensor is no three equal parts."""
    if not is_gpt2(tensors):
        return tensors
    out: dict[str, np.ndarray] = {}
    for name, t in tensors.items():
        fused, conv = _FUSED.match(name), _CONV1D.match(name)
        if fused:
            if t.ndim not in (1, 2) or t.shape[-1] % 3:
                raise ValueError(f"{name!r} of shape {list(t.shape)} is no fused query/key/value projection")
            width = t.shape[-1] // 3
            for i, part in enumerate(PARTS):
                piece = t[..., i * width:(i + 1) * width]
                out[f"{fused.group(1)}.{part}.{fused.group(2)}"] = piece.T if t.ndim == 2 else piece
        elif conv and t.ndim == 2:
            out[name] = t.T
        else:
            out[name] = t
    return out


def checkpoint_tensors(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A graph's tensors back in the checkpoint's layout (the inverse of :func:`graph_tensors`;
    tensors of any other layout are returned as they are)."""
    if not any(_SPLIT.match(n) for n in tensors):
        return tensors
    out: dict[str, np.ndarray] = {}
    for name, t in tensors.items():
        split = _SPLIT.match(name)
        if split:
            prefix, part, leaf = split.groups()
            if part == "q":
                parts = [tensors[f"{prefix}.{p}.{leaf}"] for p in PARTS]
                out[f"{prefix}.{leaf}"] = np.concatenate([p.T if p.ndim == 2 else p for p in parts], axis=-1)
        elif _CONV1D.match(name) and t.ndim == 2:
            out[name] = np.ascontiguousarray(t.T)
        else:
            out[name] = t
    return out
