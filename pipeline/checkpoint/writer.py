"""The one safetensors writer every part of the system uses (zoo, aligned, canonical, merged).

Arrays are made C-contiguous first: safetensors' numpy ``save_file`` stores a Fortran-ordered array's
bytes in memory order under the logical shape, silently scrambling it.
"""
from __future__ import annotations

import posixpath

import numpy as np
from safetensors.numpy import save as _save_bytes

from pipeline.storage import resolve, write_bytes_atomic


def to_numpy(tensor) -> np.ndarray:
    """A torch tensor or array-like as a C-contiguous numpy array of the same shape, scalars
    included (bf16 kept as ml_dtypes.bfloat16)."""
    if hasattr(tensor, "detach"):
        import torch

        from pipeline.checkpoint.dtypes import BF16
        t = tensor.detach().cpu()
        tensor = t.view(torch.int16).numpy().view(BF16) if t.dtype == torch.bfloat16 else t.numpy()
    return np.require(tensor, requirements="C")  # np.ascontiguousarray would make a scalar 1-D


def save_checkpoint(tensors: dict, path: str, metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` (name -> torch tensor or numpy array) as one safetensors file (path or URI),
    atomically.

    ``metadata`` values must be strings (safetensors ``__metadata__``).
    """
    data = checkpoint_bytes(tensors, metadata)
    fs, target = resolve(path)
    fs.create_dir(posixpath.dirname(target), recursive=True)
    write_bytes_atomic(fs, target, lambda stream: stream.write(data))


def checkpoint_bytes(tensors: dict, metadata: dict[str, str] | None = None) -> bytes:
    """What :func:`save_checkpoint` writes, as bytes (e.g. an HTTP download)."""
    return _save_bytes({name: to_numpy(t) for name, t in tensors.items()}, metadata=metadata)
