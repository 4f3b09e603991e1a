"""Broken and hostile files get a typed error naming the file and the reason: never a crash, never
code execution, never a huge allocation."""
from __future__ import annotations

import json
import os
import struct

import pytest
import torch

from pipeline.checkpoint import (CorruptCheckpoint, InvalidWeights, NotACheckpoint, UnsafeCheckpoint,
                                 UnsupportedCheckpoint, open_checkpoint, save_checkpoint)


def _safetensors(header: dict, data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def _write(tmp_path, name: str, payload: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(payload)
    return str(path)


def _expect(path: str, error: type, reason: str):
    with pytest.raises(error) as info:
        open_checkpoint(path)
    assert path in str(info.value) and reason in str(info.value)


def test_empty_file(tmp_path):
    _expect(_write(tmp_path, "empty.safetensors", b""), NotACheckpoint, "empty file")


def test_not_a_checkpoint(tmp_path):
    _expect(_write(tmp_path, "text.safetensors", b"hello, I am a text file\n" * 10), NotACheckpoint, "no JSON header")
    _expect(_write(tmp_path, "text.pt", b"hello, I am a text file\n"), NotACheckpoint, "neither a zip")
    _expect(_write(tmp_path, "notes.txt", b"hello"), NotACheckpoint, "not a checkpoint")
    _expect(str(tmp_path / "missing.safetensors"), NotACheckpoint, "no such file")


def test_truncated_file(tmp_path):
    save_checkpoint({"w": torch.randn(64, 64)}, str(tmp_path / "full.safetensors"))
    full = (tmp_path / "full.safetensors").read_bytes()
    _expect(_write(tmp_path, "cut.safetensors", full[: len(full) // 2]), CorruptCheckpoint, "truncated")
    _expect(_write(tmp_path, "tiny.safetensors", full[:5]), CorruptCheckpoint, "truncated")


def test_header_larger_than_file(tmp_path):
    payload = struct.pack("<Q", 10**12) + b'{"w": {}}'
    _expect(_write(tmp_path, "big_header.safetensors", payload), CorruptCheckpoint, "exceeds the file size")


def test_offsets_that_lie(tmp_path):
    data = bytes(16)
    overlapping = {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                   "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}
    _expect(_write(tmp_path, "overlap.safetensors", _safetensors(overlapping, data)), CorruptCheckpoint, "overlaps")
    past_end = {"a": {"dtype": "F32", "shape": [8], "data_offsets": [0, 32]}}
    _expect(_write(tmp_path, "past.safetensors", _safetensors(past_end, data)), CorruptCheckpoint, "truncated")
    backwards = {"a": {"dtype": "F32", "shape": [4], "data_offsets": [16, 0]}}
    _expect(_write(tmp_path, "back.safetensors", _safetensors(backwards, data)), CorruptCheckpoint, "data_offsets")


def test_absurd_shape_is_not_allocated(tmp_path):
    absurd = {"w": {"dtype": "F32", "shape": [10**9, 10**9, 10**9], "data_offsets": [0, 16]}}
    _expect(_write(tmp_path, "absurd.safetensors", _safetensors(absurd, bytes(16))), CorruptCheckpoint,
            "needs 4000000000000000000000000000 bytes")
    negative = {"w": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}}
    _expect(_write(tmp_path, "neg.safetensors", _safetensors(negative, bytes(16))), CorruptCheckpoint, "shape")


def test_unsupported_dtype_and_bad_json(tmp_path):
    fp8 = {"w": {"dtype": "F8_E4M3", "shape": [4], "data_offsets": [0, 4]}}
    _expect(_write(tmp_path, "fp8.safetensors", _safetensors(fp8, bytes(4))), UnsupportedCheckpoint, "F8_E4M3")
    raw = b'{"w": {"dtype": '
    _expect(_write(tmp_path, "badjson.safetensors", struct.pack("<Q", len(raw)) + raw), CorruptCheckpoint,
            "not valid JSON")


def test_zero_size_tensor(tmp_path):
    zero = {"w": {"dtype": "F32", "shape": [0, 4], "data_offsets": [0, 0]}}
    _expect(_write(tmp_path, "zero.safetensors", _safetensors(zero)), InvalidWeights, "zero elements")
    torch.save({"w": torch.zeros(0, 3)}, tmp_path / "zero.pt")
    _expect(str(tmp_path / "zero.pt"), InvalidWeights, "zero elements")


def test_nonfinite_weights_are_flagged(tmp_path):
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        w = torch.randn(8, 8).to(dtype)
        w[2, 3], w[5, 1] = float("nan"), float("inf")
        save_checkpoint({"ok": torch.ones(3), "w": w}, str(tmp_path / f"nan_{dtype}.safetensors"))
        _expect(str(tmp_path / f"nan_{dtype}.safetensors"), InvalidWeights, "'w' (2)")
    assert open_checkpoint(str(tmp_path / "nan_torch.float32.safetensors"), check_finite=False).num_params == 67


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch /tmp/weightzoo-pwned",))


def test_pickle_that_runs_code_is_refused(tmp_path):
    marker = "/tmp/weightzoo-pwned"
    if os.path.exists(marker):
        os.remove(marker)
    torch.save({"w": torch.ones(2), "evil": _RunsCode()}, tmp_path / "evil.pt")
    _expect(str(tmp_path / "evil.pt"), UnsafeCheckpoint, "system")
    assert not os.path.exists(marker)


def test_hostile_index_and_folder(tmp_path):
    (tmp_path / "m.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "../../etc/passwd"}}))
    _expect(str(tmp_path / "m.safetensors.index.json"), CorruptCheckpoint, "not a plain file name")
    (tmp_path / "m.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "absent.safetensors"}}))
    _expect(str(tmp_path / "m.safetensors.index.json"), CorruptCheckpoint, "missing")
    empty = tmp_path / "folder"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    _expect(str(empty), NotACheckpoint, "no weight files")
