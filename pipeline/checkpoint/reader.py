"""Open a checkpoint in any supported layout and return its tensors as numpy arrays.

Layouts (see :func:`checkpoint_kind`):
  * ``safetensors``: one ``.safetensors`` file (zero-copy views of a memory map);
  * ``sharded``: a ``*.safetensors.index.json`` (or ``pytorch_model.bin.index.json``) and its shards;
  * ``hf-folder``: a Hugging Face model folder, ``config.json`` plus weights in any layout above;
  * ``torch``: a ``.pt/.pth/.bin`` state dict, loaded with ``torch.load(weights_only=True)`` only,
    so a pickle that tries to run code is refused, never executed.
"""
from __future__ import annotations

import functools
import hashlib
import json
import posixpath
import re
from dataclasses import dataclass, field

import numpy as np
import pyarrow.fs as pafs

from pipeline import storage
from pipeline.checkpoint.dtypes import BF16, DTYPE_NAMES, count_nonfinite, dtype_name, is_float, raw_bytes
from pipeline.checkpoint.errors import (CheckpointError, CorruptCheckpoint, InvalidWeights, NotACheckpoint,
                                        UnsafeCheckpoint, UnsupportedCheckpoint)
from pipeline.checkpoint.safetensors_format import parse_safetensors

TORCH_SUFFIXES = (".pt", ".pth", ".bin")
WEIGHT_SUFFIXES = (".safetensors",) + TORCH_SUFFIXES
INDEX_SUFFIX = ".index.json"
#: Weight files of a Hugging Face folder, in the order we prefer them.
HF_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                   "pytorch_model.bin.index.json")
MAX_JSON_BYTES = 16 * 1024 * 1024


@functools.lru_cache(maxsize=65536)
def natural_key(name: str) -> tuple:
    """Sort key that orders ``layers.2`` before ``layers.10``."""
    return tuple(int(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+)", name)))


@dataclass
class Checkpoint:
    """A model's tensors, in natural name order.

    ``tensors`` are numpy arrays (views into the file where possible; bf16 as ``ml_dtypes.bfloat16``);
    ``metadata`` is the safetensors ``__metadata__``; ``config`` the folder's ``config.json``.
    """
    path: str
    layout: str
    tensors: dict[str, np.ndarray]
    metadata: dict[str, str] = field(default_factory=dict)
    config: dict | None = None
    file_bytes: int = 0
    base: str | None = None  # a merged PEFT adapter's base (see pipeline.checkpoint.adapter)

    @property
    def num_params(self) -> int:
        return sum(int(t.size) for t in self.tensors.values())

    @property
    def dtype(self) -> str:
        """Safetensors name of the floating dtype holding most parameters (``F32``, ``BF16``...)."""
        sizes: dict[np.dtype, int] = {}
        for t in self.tensors.values():
            sizes[t.dtype] = sizes.get(t.dtype, 0) + t.size
        floats = {d: n for d, n in sizes.items() if is_float(d)}
        return dtype_name(max(floats, key=floats.get)) if floats else "none"

    def content_id(self) -> str:
        """sha256 of the tensors (names, dtypes, shapes and bytes, in sorted-name order): the same
        weights under two file names, or in two formats, get one id."""
        names = sorted(self.tensors)
        h = hashlib.sha256("\0".join(f"{n}:{dtype_name(self.tensors[n].dtype)}:{self.tensors[n].shape}"
                                     for n in names).encode())
        for name in names:
            h.update(raw_bytes(self.tensors[name]))
        return h.hexdigest()

    def check_finite(self) -> None:
        """Raise :class:`InvalidWeights` naming the tensors that hold NaN or Inf."""
        bad = {n: c for n, t in self.tensors.items() if is_float(t.dtype) and (c := count_nonfinite(t))}
        if bad:
            listed = ", ".join(f"{n!r} ({c})" for n, c in list(bad.items())[:5])
            raise InvalidWeights(self.path, f"non-finite weights (NaN/Inf) in {len(bad)} tensor(s): {listed}")


def checkpoint_kind(fs: pafs.FileSystem, path: str, info: pafs.FileInfo | None = None) -> str:
    """``hf-folder``, ``sharded``, ``safetensors``, ``torch`` or ``unknown`` for a path."""
    info = info or fs.get_file_info(path)
    if info.type == pafs.FileType.Directory:
        return "hf-folder"
    name = posixpath.basename(path)
    if name.endswith(INDEX_SUFFIX):
        return "sharded"
    if name.endswith(".safetensors"):
        return "safetensors"
    if name.endswith(TORCH_SUFFIXES):
        return "torch"
    return "unknown"


def open_checkpoint(uri: str, check_finite: bool = True) -> Checkpoint:
    """Open a checkpoint by path or URI. Raises a :class:`CheckpointError` subclass on bad input."""
    fs, path = storage.resolve(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise NotACheckpoint(uri, "no such file or folder")
    try:
        ckpt = _open(fs, path, uri, checkpoint_kind(fs, path, info), info)
    except CheckpointError:
        raise
    except (MemoryError, OSError) as exc:
        raise CorruptCheckpoint(uri, f"could not be read: {type(exc).__name__}: {exc}") from None
    if not ckpt.tensors:
        raise InvalidWeights(uri, "contains no tensors")
    if check_finite:
        ckpt.check_finite()
    return ckpt


def _open(fs, path: str, uri: str, kind: str, info) -> Checkpoint:
    if kind == "hf-folder":
        return _open_folder(fs, path, uri)
    if kind == "sharded":
        tensors, metadata, size = _read_sharded(fs, path, uri)
        return Checkpoint(uri, "sharded", tensors, metadata, file_bytes=size)
    buf = storage.read_buffer(fs, path)
    if kind == "torch" or (kind == "unknown" and bytes(buf[:2]) == b"PK"):
        return Checkpoint(uri, "torch", _torch_tensors(buf, uri), file_bytes=len(buf))
    if kind == "unknown" and not (len(buf) > 8 and buf[8:9] == b"{"):
        raise NotACheckpoint(uri, "not a checkpoint: unknown suffix and neither safetensors nor a torch zip")
    tensors, metadata = parse_safetensors(buf, uri)
    return Checkpoint(uri, "safetensors", _sorted(tensors), metadata, file_bytes=len(buf))


def _open_folder(fs, path: str, uri: str) -> Checkpoint:
    present = {posixpath.basename(i.path) for i in fs.get_file_info(pafs.FileSelector(path))}
    config = _read_json(fs, f"{path}/config.json", uri) if "config.json" in present else None
    if config is not None and not isinstance(config, dict):
        raise CorruptCheckpoint(uri, "config.json is not a JSON object")
    weights = next((w for w in HF_WEIGHT_FILES if w in present), None)
    if weights is None:
        indexes = sorted(p for p in present if p.endswith(INDEX_SUFFIX))
        singles = sorted(p for p in present if p.endswith(WEIGHT_SUFFIXES))
        weights = (indexes or singles or [None])[0]
    if weights is None:
        raise NotACheckpoint(uri, "folder holds no weight files (model.safetensors, pytorch_model.bin, ...)")
    inner = _open(fs, f"{path}/{weights}", f"{uri.rstrip('/')}/{weights}",
                  checkpoint_kind(fs, weights), None)
    return Checkpoint(uri, "hf-folder", inner.tensors, inner.metadata, config, inner.file_bytes)


def _read_sharded(fs, path: str, uri: str):
    index = _read_json(fs, path, uri)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CorruptCheckpoint(uri, "index has no 'weight_map' object")
    folder = posixpath.dirname(path)
    tensors, metadata, size = {}, {}, 0
    for shard in sorted(set(weight_map.values())):
        if not isinstance(shard, str) or posixpath.basename(shard) != shard or shard in ("", ".", ".."):
            raise CorruptCheckpoint(uri, f"shard name {shard!r} is not a plain file name in the index's folder")
        shard_uri = f"{posixpath.dirname(uri)}/{shard}"
        if fs.get_file_info(f"{folder}/{shard}").type != pafs.FileType.File:
            raise CorruptCheckpoint(uri, f"shard {shard!r} named by the index is missing")
        buf = storage.read_buffer(fs, f"{folder}/{shard}")
        size += len(buf)
        if shard.endswith(".safetensors"):
            part, meta = parse_safetensors(buf, shard_uri)
            metadata.update(meta)
        else:
            part = _torch_tensors(buf, shard_uri)
        for name, t in part.items():
            if name in tensors:
                raise CorruptCheckpoint(uri, f"tensor {name!r} appears in more than one shard")
            tensors[name] = t
    missing = [n for n in weight_map if n not in tensors]
    if missing:
        raise CorruptCheckpoint(uri, f"{len(missing)} tensor(s) named by the index are in no shard, e.g. {missing[0]!r}")
    return _sorted(tensors), metadata, size


def _read_json(fs, path: str, uri: str):
    with fs.open_input_file(path) as f:
        if f.size() > MAX_JSON_BYTES:
            raise CorruptCheckpoint(uri, f"{posixpath.basename(path)} is larger than {MAX_JSON_BYTES} bytes")
        raw = f.read()
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptCheckpoint(uri, f"{posixpath.basename(path)} is not valid JSON ({exc})") from None


def _torch_tensors(buf, uri: str) -> dict[str, np.ndarray]:
    """A torch state dict as numpy arrays, loaded with ``weights_only=True`` (never plain unpickling)."""
    import io
    import pickle

    import torch

    _TORCH_NUMPY_DTYPES = {torch.float64, torch.float32, torch.float16, torch.int64, torch.int32, torch.int16,
                           torch.int8, torch.uint8, torch.bool}
    head = bytes(buf[:2])
    if len(buf) == 0:
        raise NotACheckpoint(uri, "empty file")
    if head != b"PK" and head[:1] != b"\x80":
        raise NotACheckpoint(uri, "not a torch checkpoint: neither a zip archive nor a pickle")
    try:
        obj = torch.load(io.BytesIO(memoryview(buf)), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        if lines and lines[0].startswith("Weights only load failed"):
            culprit = next((line for line in lines if "GLOBAL" in line or "Unsupported" in line), lines[-1])
            raise UnsafeCheckpoint(uri, f"refused to unpickle with weights_only=True: {culprit}") from None
        raise CorruptCheckpoint(uri, f"torch.load failed: {lines[0] if lines else repr(exc)}") from None
    except Exception as exc:  # torch raises RuntimeError/EOFError/... for broken archives
        raise CorruptCheckpoint(uri, f"torch.load failed: {type(exc).__name__}: {str(exc)[:200]}") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise UnsupportedCheckpoint(uri, f"holds a {type(obj).__name__}, not a state dict")
    out = {}
    for name, t in obj.items():
        if not isinstance(t, torch.Tensor):
            continue
        if t.numel() == 0:
            raise InvalidWeights(uri, f"tensor {name!r} has zero elements (shape {list(t.shape)})")
        if t.dtype == torch.bfloat16:
            array = t.detach().view(torch.int16).numpy().view(BF16)
        else:
            array = t.detach().numpy() if t.dtype in _TORCH_NUMPY_DTYPES else None
        if array is None or array.dtype not in DTYPE_NAMES:
            raise UnsupportedCheckpoint(uri, f"tensor {name!r}: unsupported dtype {t.dtype}")
        out[str(name)] = array
    return _sorted(out)


def _sorted(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: tensors[name] for name in sorted(tensors, key=natural_key)}
