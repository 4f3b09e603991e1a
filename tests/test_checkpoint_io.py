"""Reading every layout and dtype, content ids, and the writer's contiguity guarantee."""
from __future__ import annotations

import json

import ml_dtypes
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from safetensors.torch import save_file as torch_save_file

from pipeline.checkpoint import open_checkpoint, save_checkpoint
from pipeline.checkpoint.discover import discover

STATE = {"layers.0.weight": torch.randn(4, 3), "layers.0.bias": torch.randn(4),
         "layers.1.weight": torch.randn(2, 4), "layers.1.bias": torch.randn(2)}


def _as_numpy(t: torch.Tensor) -> np.ndarray:
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_safetensors_dtypes_read_exactly(tmp_path, dtype):
    state = {k: v.to(dtype) for k, v in STATE.items()}
    torch_save_file(state, tmp_path / "m.safetensors", metadata={"activation": "relu"})
    ckpt = open_checkpoint(str(tmp_path / "m.safetensors"))
    assert list(ckpt.tensors) == ["layers.0.bias", "layers.0.weight", "layers.1.bias", "layers.1.weight"]
    assert ckpt.metadata == {"activation": "relu"}
    assert ckpt.dtype == {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}[dtype]
    for name, t in state.items():
        assert ckpt.tensors[name].tobytes() == _as_numpy(t).tobytes()
        assert ckpt.tensors[name].shape == tuple(t.shape)


def test_safetensors_tensors_are_views_of_the_file(tmp_path):
    save_checkpoint(STATE, str(tmp_path / "m.safetensors"))
    ckpt = open_checkpoint(str(tmp_path / "m.safetensors"))
    assert all(not t.flags.owndata for t in ckpt.tensors.values())


def test_torch_state_dict_same_content_id_as_safetensors(tmp_path):
    torch.save(STATE, tmp_path / "m.pt")
    torch.save({"state_dict": STATE, "epoch": 3}, tmp_path / "wrapped.pth")
    save_checkpoint(STATE, str(tmp_path / "m.safetensors"))
    save_checkpoint(STATE, str(tmp_path / "renamed.safetensors"))
    ids = {name: open_checkpoint(str(tmp_path / name)).content_id()
           for name in ("m.pt", "wrapped.pth", "m.safetensors", "renamed.safetensors")}
    assert len(set(ids.values())) == 1
    changed = dict(STATE, **{"layers.1.bias": STATE["layers.1.bias"] + 1e-3})
    save_checkpoint(changed, str(tmp_path / "changed.safetensors"))
    assert open_checkpoint(str(tmp_path / "changed.safetensors")).content_id() != ids["m.pt"]


def test_sharded_and_hf_folder(tmp_path):
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"hidden_act": "gelu", "num_attention_heads": 2}))
    names = list(STATE)
    save_checkpoint({n: STATE[n] for n in names[:2]}, str(folder / "model-00001-of-00002.safetensors"))
    save_checkpoint({n: STATE[n] for n in names[2:]}, str(folder / "model-00002-of-00002.safetensors"))
    weight_map = {n: f"model-0000{1 + i // 2}-of-00002.safetensors" for i, n in enumerate(names)}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))

    ckpt = open_checkpoint(str(folder))
    assert ckpt.layout == "hf-folder" and ckpt.config["hidden_act"] == "gelu"
    sharded = open_checkpoint(str(folder / "model.safetensors.index.json"))
    assert sharded.layout == "sharded"
    for c in (ckpt, sharded):
        assert {n: t.tobytes() for n, t in c.tensors.items()} == {n: t.numpy().tobytes() for n, t in STATE.items()}
    # the folder is one checkpoint, not three files
    save_checkpoint(STATE, str(tmp_path / "single.safetensors"))
    assert [r.uri.rsplit("/", 1)[-1] for r in discover([str(tmp_path)])] == ["hf", "single.safetensors"]


def test_hf_folder_with_pytorch_bin(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    torch.save(STATE, tmp_path / "pytorch_model.bin")
    ckpt = open_checkpoint(str(tmp_path))
    assert ckpt.layout == "hf-folder" and set(ckpt.tensors) == set(STATE)


def test_discover_globs_and_file_uris(tmp_path):
    for i in range(3):
        save_checkpoint(STATE, str(tmp_path / "sub" / f"m{i}.safetensors"))
    (tmp_path / "sub" / "notes.txt").write_text("not a model")
    assert len(discover([str(tmp_path)])) == 3
    assert len(discover([str(tmp_path / "sub" / "m[01].safetensors")])) == 2
    refs = discover([f"file://{tmp_path}/sub"])
    assert len(refs) == 3 and all(r.size > 0 and r.mtime_ns > 0 for r in refs)
    assert open_checkpoint(refs[0].uri).num_params == 26


def test_writer_makes_fortran_arrays_contiguous_and_keeps_scalars_scalar(tmp_path):
    fortran = np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4))
    transposed = torch.arange(6, dtype=torch.float32).reshape(2, 3).t()  # non-contiguous torch view
    steps = torch.tensor(7)  # BatchNorm's num_batches_tracked: strict loaders refuse it as shape [1]
    save_checkpoint({"f": fortran, "t": transposed, "s": steps, "n": np.int64(3)}, str(tmp_path / "w.safetensors"))
    loaded = load_file(str(tmp_path / "w.safetensors"))
    np.testing.assert_array_equal(loaded["f"], fortran)
    np.testing.assert_array_equal(loaded["t"], transposed.numpy())
    assert loaded["s"].shape == loaded["n"].shape == () and int(loaded["s"]) == 7


def test_non_local_filesystem_through_fsspec(tmp_path):
    """URIs that pyarrow does not know natively go through fsspec: the code path s3:// etc. take."""
    import fsspec

    memory = fsspec.filesystem("memory")
    from safetensors.torch import save as torch_save_bytes
    with memory.open("/zoo/a.safetensors", "wb") as f:
        f.write(torch_save_bytes(STATE, metadata={"activation": "relu"}))
    with memory.open("/zoo/notes.txt", "wb") as f:
        f.write(b"not a model")
    refs = discover(["memory://zoo"])
    assert [r.uri for r in refs] == ["memory:///zoo/a.safetensors"]
    ckpt = open_checkpoint(refs[0].uri)
    assert ckpt.metadata == {"activation": "relu"} and ckpt.num_params == 26
    save_checkpoint(STATE, str(tmp_path / "local.safetensors"))
    assert ckpt.content_id() == open_checkpoint(str(tmp_path / "local.safetensors")).content_id()


def test_non_contiguous_torch_tensors_round_trip_through_a_shard(tmp_path):
    import pyarrow.fs as pafs

    from pipeline.graph import build_graph, read_shard, write_shard

    transposed = torch.arange(12, dtype=torch.float32).reshape(3, 4).t()  # stored with strides
    torch.save({"layers.0.weight": transposed, "layers.0.bias": torch.ones(4)}, tmp_path / "t.pt")
    ckpt = open_checkpoint(str(tmp_path / "t.pt"))
    assert not ckpt.tensors["layers.0.weight"].flags.c_contiguous
    write_shard(pafs.LocalFileSystem(), str(tmp_path / "part"), [build_graph(ckpt)])
    (graph,) = read_shard(pafs.LocalFileSystem(), str(tmp_path / "part"))
    np.testing.assert_array_equal(graph.tensors["layers.0.weight"], transposed.numpy())
