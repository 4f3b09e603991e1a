"""Family recognition: try each builder, most specific first, and fall back to per-layer graphs."""
from __future__ import annotations

import json

from pipeline.checkpoint.dtypes import is_float
from pipeline.checkpoint.reader import Checkpoint
from pipeline.graph.builders.common import LayoutMismatch, parse_modules
from pipeline.graph.builders.decoder import build_decoder
from pipeline.graph.builders.efficientnet import build_efficientnet
from pipeline.graph.builders.gpt2 import build_gpt2
from pipeline.graph.builders.mobilenet import build_mobilenet
from pipeline.graph.builders.per_layer import build_per_layer
from pipeline.graph.builders.regnet import build_regnet
from pipeline.graph.builders.residual import build_residual
from pipeline.graph.builders.sequential import build_sequential
from pipeline.graph.builders.t5 import build_t5
from pipeline.graph.builders.transformer import build_transformer
from pipeline.graph.builders.vit import build_vit
from pipeline.graph.hints import resolve_hints
from pipeline.graph.layouts import graph_tensors
from pipeline.graph.schema import WeightGraph, metadata_json


def build_graph(ckpt: Checkpoint, content_id: str | None = None, sidecar: dict | None = None,
                command_line: dict | None = None) -> WeightGraph:
    """The weight graph of a checkpoint: computational if its family is recognized, else per-layer.

    ``sidecar`` and ``command_line``: hints from outside the checkpoint (see :mod:`pipeline.graph.hints`
    for their precedence). ``info`` gets the row's descriptive fields, ``hints`` (key -> ``[value,
    source]``) and ``fallback``: why a recognized family's layout did not fit, where it fell back to a
    per-layer graph (:class:`~pipeline.graph.builders.common.LayoutMismatch`); ``content_id`` is computed unless given. The structure depends only on names,
    shapes, dtypes and hints, so it is cached per architecture (a zoo repeats a few architectures
    many times). The graph's tensors are the checkpoint's in the graph layout
    (:mod:`pipeline.graph.layouts`: views of them, e.g. GPT-2's ``Conv1D`` weights transposed)."""
    resolved = resolve_hints(ckpt, sidecar, command_line)
    hints = {"activation": resolved.get("activation", ("unknown",))[0],
             "family": resolved.get("family", ("",))[0], "num_heads": resolved.get("num_heads", (None,))[0],
             "architecture": json.dumps({k: v for k, v in (ckpt.config or {}).items() if k in ARCHITECTURE_KEYS},
                                        sort_keys=True)}
    try:
        tensors, layout_error = graph_tensors(ckpt.tensors), ""
    except ValueError as exc:
        tensors, layout_error = ckpt.tensors, str(exc)
    signature = (tuple((n, t.shape, t.dtype.str) for n, t in tensors.items()), tuple(hints.values()))
    groups, blocks, family, mode, fallback = _structure(signature, tensors, hints)
    fallback = "; ".join(r for r in (layout_error, fallback) if r)
    info = {"content_id": content_id or ckpt.content_id(), "source_path": ckpt.path,
            "source_layout": ckpt.layout, "source_dtype": ckpt.dtype,
            "metadata": metadata_json(ckpt.metadata, ckpt.config),
            "hints": json.dumps({k: list(v) for k, v in sorted(resolved.items())}), "fallback": fallback}
    return WeightGraph(list(groups), list(blocks), tensors, family=family, mode=mode,
                       activation=hints["activation"], info=info)


#: ``config.json`` fields that shape a graph the weights do not show (strides, stages)
ARCHITECTURE_KEYS = ("output_stride", "num_block_repeats", "depth_coefficient")
_CACHE: dict = {}
_CACHE_SIZE = 4096


def _structure(signature, tensors, hints) -> tuple[tuple, tuple, str, str, str]:
    """``(groups, blocks, family, mode, reason)``: ``reason`` says why a recognized family fell
    back to a per-layer graph (empty otherwise)."""
    cached = _CACHE.get(signature)
    if cached is not None:
        return cached
    names = list(tensors)
    act, heads = hints["activation"], hints["num_heads"]
    built, reasons = None, []
    attempts = [(build, (tensors, names, act, heads)) for build in (build_transformer, build_vit, build_decoder,
                                                                     build_gpt2, build_t5)]
    architecture = json.loads(hints["architecture"])
    attempts += [(build_mobilenet, (tensors, names, architecture.get("output_stride"))),
                 (build_efficientnet, (tensors, names, act, architecture)),
                 (build_regnet, (tensors, names, act))]
    for build, args in attempts:
        try:
            built = build(*args)
        except LayoutMismatch as exc:
            reasons.append(str(exc))
        if built is not None:
            break
    if built is None:
        modules = parse_modules(tensors, [n for n in names if is_float(tensors[n].dtype)])
        built = (modules and (build_residual(tensors, modules, act)
                              or build_sequential(tensors, modules, act, hints["family"]))) or None
    if built is not None:
        (asm, family), mode, reasons = built, "computational", []
    else:
        asm, family, mode = build_per_layer(tensors, names), "unknown", "per_layer"
    if len(_CACHE) >= _CACHE_SIZE:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[signature] = (tuple(asm.groups), tuple(asm.blocks), family, mode, "; ".join(reasons))
    return _CACHE[signature]
