"""Family recognition: try each builder, most specific first, and fall back to per-layer graphs."""
from __future__ import annotations

from pipeline.checkpoint.dtypes import is_float
from pipeline.checkpoint.reader import Checkpoint
from pipeline.graph.builders.common import canonical_activation, parse_modules
from pipeline.graph.builders.per_layer import build_per_layer
from pipeline.graph.builders.residual import build_residual
from pipeline.graph.builders.sequential import build_sequential
from pipeline.graph.builders.transformer import build_transformer
from pipeline.graph.schema import WeightGraph, metadata_json


def model_hints(ckpt: Checkpoint) -> dict:
    """Activation, family and head count from safetensors metadata or ``config.json``."""
    meta, config = ckpt.metadata, ckpt.config or {}
    activation = meta.get("activation") or config.get("hidden_act") or config.get("activation")
    heads = meta.get("num_attention_heads") or config.get("num_attention_heads")
    return {"activation": canonical_activation(activation),
            "family": meta.get("family", ""),
            "num_heads": int(heads) if str(heads).isdigit() else None}


def build_graph(ckpt: Checkpoint, content_id: str | None = None) -> WeightGraph:
    """The weight graph of a checkpoint: computational if its family is recognized, else per-layer.

    ``info`` gets the row's descriptive fields; ``content_id`` is computed unless given. The
    structure depends only on names, shapes, dtypes and hints, so it is cached per architecture
    (a zoo repeats a few architectures many times)."""
    hints = model_hints(ckpt)
    signature = (tuple((n, t.shape, t.dtype.str) for n, t in ckpt.tensors.items()), tuple(hints.values()))
    groups, blocks, family, mode = _structure(signature, ckpt.tensors, hints)
    info = {"content_id": content_id or ckpt.content_id(), "source_path": ckpt.path,
            "source_layout": ckpt.layout, "source_dtype": ckpt.dtype,
            "metadata": metadata_json(ckpt.metadata, ckpt.config)}
    return WeightGraph(list(groups), list(blocks), ckpt.tensors, family=family, mode=mode,
                       activation=hints["activation"], info=info)


_CACHE: dict = {}
_CACHE_SIZE = 4096


def _structure(signature, tensors, hints) -> tuple[tuple, tuple, str, str]:
    cached = _CACHE.get(signature)
    if cached is not None:
        return cached
    names = list(tensors)
    act = hints["activation"]
    modules = parse_modules(tensors, [n for n in names if is_float(tensors[n].dtype)])
    built = (build_transformer(tensors, names, act, hints["num_heads"])
             or (modules and (build_residual(tensors, modules, act)
                              or build_sequential(tensors, modules, act, hints["family"]))) or None)
    if built is not None:
        (asm, family), mode = built, "computational"
    else:
        asm, family, mode = build_per_layer(tensors, names), "unknown", "per_layer"
    if len(_CACHE) >= _CACHE_SIZE:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[signature] = (tuple(asm.groups), tuple(asm.blocks), family, mode)
    return _CACHE[signature]
