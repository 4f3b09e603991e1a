"""The tensor dtypes we read and store, by their safetensors names.

numpy has no bfloat16; ``ml_dtypes.bfloat16`` gives it a numpy dtype so every reader can return
plain numpy arrays (zero-copy views of the file) whatever the precision.
"""
from __future__ import annotations

import ml_dtypes
import numpy as np

BF16 = np.dtype(ml_dtypes.bfloat16)

#: safetensors dtype name -> numpy dtype. Floating types are weights; the integer types occur as
#: buffers (``num_batches_tracked``, ``position_ids``) and are carried through unchanged.
SAFETENSORS_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": BF16,
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}
DTYPE_NAMES: dict[np.dtype, str] = {v: k for k, v in SAFETENSORS_DTYPES.items()}

#: Stored precisions a job may choose for floating-point weights.
STORED_PRECISIONS: dict[str, np.dtype] = {"fp32": np.dtype(np.float32), "fp16": np.dtype(np.float16),
                                          "bf16": BF16}

#: For each floating dtype: (unsigned view of the same width, mask of the exponent bits). A value
#: is NaN or Inf exactly when all its exponent bits are set.
_EXPONENT_MASKS = {
    np.dtype(np.float64): (np.uint64, 0x7FF0000000000000),
    np.dtype(np.float32): (np.uint32, 0x7F800000),
    np.dtype(np.float16): (np.uint16, 0x7C00),
    BF16: (np.uint16, 0x7F80),
}


def is_float(dtype: np.dtype) -> bool:
    return np.dtype(dtype) in _EXPONENT_MASKS


def dtype_name(dtype: np.dtype) -> str:
    """Safetensors name of a numpy dtype (``F32``, ``BF16``...)."""
    return DTYPE_NAMES[np.dtype(dtype)]


def count_nonfinite(array: np.ndarray) -> int:
    """Number of NaN/Inf entries of a floating array (bfloat16: read from the exponent bits)."""
    if array.dtype != BF16:
        return int(array.size - np.count_nonzero(np.isfinite(array)))
    uint, mask = _EXPONENT_MASKS[array.dtype]
    bits = np.ascontiguousarray(array).reshape(-1).view(uint)
    return int(np.count_nonzero((bits & uint(mask)) == uint(mask)))


def raw_bytes(array: np.ndarray) -> np.ndarray:
    """The array's bytes in C order as a flat uint8 array (a view when already contiguous); works for
    bfloat16, which does not export the buffer protocol itself."""
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8)


def round_to(fmt: str, a: np.ndarray) -> np.ndarray:
    """``a`` rounded to number format ``fmt`` and back to float32: ``fp16``, ``bf16``, ``int8`` (a
    round trip of absmax quantization per tensor: 255 levels of one step), or ``fp32``."""
    a = np.asarray(a, np.float32)
    if fmt == "fp16":
        return a.astype(np.float16).astype(np.float32)
    if fmt == "bf16":
        return a.astype(BF16).astype(np.float32)
    if fmt == "int8":
        step = max(float(np.abs(a).max()), 1e-30) / 127.0
        return (np.round(a / step) * step).astype(np.float32)
    return a
