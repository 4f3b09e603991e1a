"""Hints: what a bare state dict cannot say. A scikit-learn MLP saved as a bare ``torch.save`` state
dict gets ReLU scaling symmetry only when told its activation, and then scikit-learn's own outputs
are unchanged by a random element of the group; metadata > config.json > sidecar > command line;
bad hints are refused with the file and the reason; ingestion records hints and their sources."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import models
from pipeline.checkpoint import InvalidHints, open_checkpoint, save_checkpoint
from pipeline.graph import build_graph
from pipeline.graph.hints import SIDECAR, Sidecars, check_hints
from pipeline.testing import random_transform
from pipeline.commands import ingest_zoo


@pytest.fixture(scope="module")
def sklearn_mlp():
    return models.sklearn_mlp()


def _sklearn_outputs(model, tensors, x):
    import copy

    clone = copy.deepcopy(model)
    layers = sorted({int(n.split(".")[0]) for n in tensors})
    clone.coefs_ = [np.asarray(tensors[f"{i}.weight"], np.float64).T for i in layers]
    clone.intercepts_ = [np.asarray(tensors[f"{i}.bias"], np.float64) for i in layers]
    return clone.predict_proba(x)


def test_a_bare_state_dict_gets_the_group_its_activation_hint_names(tmp_path, sklearn_mlp):
    model, state, x = sklearn_mlp
    torch.save(state, tmp_path / "mlp.pt")
    bare = build_graph(open_checkpoint(str(tmp_path / "mlp.pt")))
    assert bare.activation == "unknown"
    assert {g.symmetry for g in bare.node_groups if g.kind == "hidden"} == {"perm"}
    told = build_graph(open_checkpoint(str(tmp_path / "mlp.pt")), command_line={"activation": "relu"})
    assert {g.symmetry for g in told.node_groups if g.kind == "hidden"} == {"perm_scale"}
    assert json.loads(told.info["hints"]) == {"activation": ["relu", "command line"]}
    reference = _sklearn_outputs(model, told.tensors, x)
    rng = np.random.default_rng(0)
    for _ in range(3):  # permutations and positive scalings: scikit-learn computes the same function
        moved = random_transform(told, rng)
        assert any(not np.allclose(moved.tensors[n], told.tensors[n]) for n in told.tensors)
        np.testing.assert_allclose(_sklearn_outputs(model, moved.tensors, x), reference, rtol=1e-9, atol=1e-12)
    wrong = build_graph(open_checkpoint(str(tmp_path / "mlp.pt")), command_line={"activation": "tanh"})
    flipped = random_transform(wrong, np.random.default_rng(1))  # sign flips are no symmetry of ReLU
    assert np.abs(_sklearn_outputs(model, flipped.tensors, x) - reference).max() > 1e-3
    relu6 = build_graph(open_checkpoint(str(tmp_path / "mlp.pt")), command_line={"activation": "relu6"})
    assert {g.symmetry for g in relu6.node_groups if g.kind == "hidden"} == {"perm"}  # clipped: no scaling


def test_precedence_metadata_config_sidecar_command_line(tmp_path, sklearn_mlp):
    _, state, _ = sklearn_mlp
    (tmp_path / SIDECAR).write_text(json.dumps({"*.pt": {"activation": "relu"}, "*": {"family": "mlp"},
                                                "told.safetensors": {"activation": "gelu"}}))
    torch.save(state, tmp_path / "bare.pt")
    save_checkpoint(state, str(tmp_path / "told.safetensors"), {"activation": "tanh"})
    hf = tmp_path / "hf"
    hf.mkdir()
    save_checkpoint(state, str(hf / "model.safetensors"))
    (hf / "config.json").write_text(json.dumps({"hidden_act": "silu"}))
    sidecars, cli = Sidecars(), {"activation": "sigmoid", "num_heads": 2}

    def hints(path):
        graph = build_graph(open_checkpoint(str(path)), sidecar=sidecars.hints_for(str(path)), command_line=cli)
        return json.loads(graph.info["hints"])

    assert hints(tmp_path / "bare.pt") == {"activation": ["relu", "sidecar"], "family": ["mlp", "sidecar"],
                                           "num_heads": [2, "command line"]}
    assert hints(tmp_path / "told.safetensors")["activation"] == ["tanh", "metadata"]
    assert hints(hf)["activation"] == ["silu", "config.json"]  # its sidecar would be hf/'s own


@pytest.mark.parametrize("sidecar, reason", [
    ("{not json", "not JSON"),
    ('["relu"]', "JSON object mapping glob patterns"),
    ('{"*": {"activation": "wobbly"}}', "unknown activation 'wobbly'"),
    ('{"*": {"depth": 3}}', "unknown hint 'depth'"),
    ('{"*": {"num_heads": -2}}', "num_heads must be a positive integer"),
    ('{"*": {"family": "gpt9"}}', "unknown family 'gpt9'"),
])
def test_bad_sidecars_are_refused_with_the_file_and_reason(tmp_path, sidecar, reason):
    (tmp_path / SIDECAR).write_text(sidecar)
    with pytest.raises(InvalidHints, match=reason) as error:
        Sidecars().hints_for(str(tmp_path / "model.pt"))
    assert SIDECAR in str(error.value)


def test_command_line_hints_are_checked():
    assert check_hints({"activation": "ReLU", "num_heads": "4", "family": None}, "x") == \
        {"activation": "relu", "num_heads": 4}
    with pytest.raises(SystemExit) as exit_:
        ingest_zoo.main(["nothing", "--out", "nowhere", "--activation", "wobbly"])
    assert exit_.value.code == 2


def test_ingestion_records_hints_and_refuses_a_bad_sidecar(ray_session, tmp_path, sklearn_mlp):
    from pipeline.ingest import IngestConfig, read_manifest, run_ingest
    from pipeline.storage import read_parquet

    _, state, _ = sklearn_mlp
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.mkdir(), bad.mkdir()
    (good / SIDECAR).write_text(json.dumps({"relu-*": {"activation": "relu"}}))
    (bad / SIDECAR).write_text('{"*": {"activation": "wobbly"}}')
    torch.save(state, good / "relu-mlp.pt")
    torch.save({k: v * 2 for k, v in state.items()}, good / "plain-mlp.pt")
    torch.save({k: v * 3 for k, v in state.items()}, bad / "mlp.pt")
    summary = run_ingest(IngestConfig([str(tmp_path)], str(tmp_path / "graphs"), hints={"activation": "tanh"}))
    assert (summary["converted"], summary["error"]) == (2, 1)
    rows = {r["source_path"].rsplit("/", 1)[1]: r for r in read_manifest(str(tmp_path / "graphs")).to_pylist()}
    assert rows["relu-mlp.pt"]["activation"] == "relu"
    assert json.loads(rows["relu-mlp.pt"]["hints"]) == {"activation": ["relu", "sidecar"]}
    assert json.loads(rows["plain-mlp.pt"]["hints"]) == {"activation": ["tanh", "command line"]}
    errors = read_parquet(str(tmp_path / "graphs" / "errors.parquet")).to_pylist()
    assert errors[0]["error_kind"] == "InvalidHints" and "wobbly" in errors[0]["error"] \
        and SIDECAR in errors[0]["error"]
