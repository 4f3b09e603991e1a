"""A validating safetensors parser that returns zero-copy numpy views of a byte buffer.

We parse the header ourselves (rather than through ``safetensors.safe_open``) so that every way a
file can lie is caught before anything is allocated, with a typed error that says what is wrong:
header length beyond the file, offsets that overlap or run past the data, shapes whose byte size does
not match their offsets (an absurd declared shape is rejected by arithmetic, never allocated).

Layout: ``u64 little-endian header length N | N bytes of JSON | data``; each JSON entry is
``{"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}`` relative to the data section.
"""
from __future__ import annotations

import json
import math

import numpy as np

from pipeline.checkpoint.dtypes import SAFETENSORS_DTYPES
from pipeline.checkpoint.errors import CorruptCheckpoint, InvalidWeights, NotACheckpoint, UnsupportedCheckpoint

MAX_HEADER_BYTES = 100 * 1024 * 1024


def parse_safetensors(buf, path: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Parse a safetensors byte buffer.

    Args:
        buf: anything exposing the buffer protocol (``mmap``, ``pyarrow.Buffer``, ``bytes``).
        path: the file's name, used in errors.
    Returns:
        ``(tensors, metadata)``: name -> read-only numpy view into ``buf``; the ``__metadata__`` dict.
    Raises:
        NotACheckpoint, CorruptCheckpoint, UnsupportedCheckpoint, InvalidWeights.
    """
    view = memoryview(buf).cast("B")
    size = len(view)
    if size == 0:
        raise NotACheckpoint(path, "empty file")
    if size < 8:
        raise CorruptCheckpoint(path, f"truncated: {size} bytes, shorter than the 8-byte header length")
    header_len = int.from_bytes(view[:8], "little")
    if size == 8 or view[8] != ord("{"):
        raise NotACheckpoint(path, "not a safetensors file: no JSON header after the 8-byte length")
    if header_len > size - 8:
        raise CorruptCheckpoint(path, f"header length {header_len} exceeds the file size {size}")
    if header_len > MAX_HEADER_BYTES:
        raise CorruptCheckpoint(path, f"header length {header_len} exceeds the {MAX_HEADER_BYTES}-byte limit")
    try:
        header = json.loads(bytes(view[8:8 + header_len]))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptCheckpoint(path, f"header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise CorruptCheckpoint(path, "header is not a JSON object")

    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CorruptCheckpoint(path, "__metadata__ must map strings to strings")
    data_start = 8 + header_len
    data_len = size - data_start
    spans = []
    for name, entry in header.items():
        spans.append((*_check_entry(path, name, entry, data_len), name))
    spans.sort()
    previous_end = 0
    for begin, end, _, _, name in spans:
        if begin < previous_end:
            raise CorruptCheckpoint(path, f"tensor {name!r} overlaps the previous tensor's bytes")
        previous_end = end

    tensors = {}
    for begin, end, dtype, shape, name in spans:
        array = np.frombuffer(view, dtype=dtype, count=math.prod(shape), offset=data_start + begin)
        tensors[name] = array.reshape(shape)
    return tensors, metadata


def _check_entry(path: str, name: str, entry, data_len: int):
    if not isinstance(entry, dict):
        raise CorruptCheckpoint(path, f"tensor {name!r}: header entry is not an object")
    dtype_name, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype_name not in SAFETENSORS_DTYPES:
        raise UnsupportedCheckpoint(path, f"tensor {name!r}: unsupported dtype {dtype_name!r}")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise CorruptCheckpoint(path, f"tensor {name!r}: shape {shape!r} is not a list of non-negative integers")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(type(o) is int for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]):
        raise CorruptCheckpoint(path, f"tensor {name!r}: data_offsets {offsets!r} are not [begin <= end]")
    dtype = SAFETENSORS_DTYPES[dtype_name]
    nbytes = math.prod(shape) * dtype.itemsize  # python ints: an absurd shape cannot overflow
    begin, end = offsets
    if end - begin != nbytes:
        raise CorruptCheckpoint(path, f"tensor {name!r}: shape {shape} needs {nbytes} bytes but its offsets "
                                      f"span {end - begin}")
    if end > data_len:
        raise CorruptCheckpoint(path, f"truncated: tensor {name!r} ends at byte {end} of the data section, "
                                      f"which has {data_len}")
    if nbytes == 0:
        raise InvalidWeights(path, f"tensor {name!r} has zero elements (shape {shape})")
    return begin, end, dtype, tuple(shape)
