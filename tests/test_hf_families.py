"""Real ``transformers`` architectures, built from tiny configs and saved with ``save_pretrained``:
each gets a computational graph whose symmetry group is exactly right (a random element leaves the
real model's outputs unchanged, an uncoupled permutation changes them), the main encoder is
invariant to it, re-basin recovers a planted element, and a planted copy is found as a
near-duplicate while another model of the family, and a copy with its attention broken, are not."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from pipeline.checkpoint import open_checkpoint, save_checkpoint
from pipeline.encoders import build_encoder, embed
from pipeline.graph import build_graph
from pipeline.graph.layouts import checkpoint_tensors
from pipeline.rebasin import match
from pipeline.search.duplicates import model_prints, near_duplicate_groups
from pipeline.symmetry import compose, is_identity, random_element, transformed, uncoupled_permutation
from pipeline.testing import assert_invariant, random_transform, relative_difference
from pipeline.zoo.hf_tiny import logits, tiny_models

MODELS = tiny_models()
CNNS = ("mobilenet_v2", "efficientnet", "regnet")
#: the models run in float64, but LLaMA-family and T5 RMS norms compute in float32
RTOL = 1e-5


def _saved(tmp_path, name, model=None):
    folder = tmp_path / name
    (model or MODELS[name][0]).save_pretrained(folder)
    return build_graph(open_checkpoint(str(folder)))


def _outputs_with(tmp_path, name, tensors):
    """The real model's outputs with ``tensors`` (names as saved), loaded back by ``from_pretrained``."""
    model, inputs = MODELS[name]
    folder = tmp_path / f"{name}-loaded"
    folder.mkdir(exist_ok=True)
    save_checkpoint(checkpoint_tensors(tensors), str(folder / "model.safetensors"), {"format": "pt"})
    shutil.copy(tmp_path / name / "config.json", folder / "config.json")
    loaded = type(model).from_pretrained(folder, dtype=torch.float64).eval()
    return logits(loaded, inputs)


@pytest.mark.parametrize("name", list(MODELS))
def test_group_is_exactly_the_real_models_symmetry(tmp_path, name):
    graph = _saved(tmp_path, name)
    assert graph.mode == "computational" and graph.family == ("cnn" if name in CNNS else "transformer")
    reference = logits(*MODELS[name])
    rng = np.random.default_rng(0)
    for _ in range(3):
        moved = random_transform(graph, rng)
        assert any(not np.array_equal(moved.tensors[n], graph.tensors[n]) for n in graph.tensors)
        assert relative_difference(_outputs_with(tmp_path, name, moved.tensors), reference) < RTOL
    broken = uncoupled_permutation(graph, rng)
    assert relative_difference(_outputs_with(tmp_path, name, broken), reference) > 1e-3


@pytest.mark.parametrize("name", list(MODELS))
def test_main_encoder_is_invariant(tmp_path, name):
    graph = _saved(tmp_path, name)
    torch.manual_seed(0)
    encoder = build_encoder("scale_gmn", dim=32, hidden=32)
    assert_invariant(lambda g: embed(encoder, [g]), graph, np.random.default_rng(1))


@pytest.mark.parametrize("name", list(MODELS))
def test_rebasin_recovers_a_planted_element(tmp_path, name, trials=10):
    graph = _saved(tmp_path, name)
    rng = np.random.default_rng(2)
    recovered = 0
    for trial in range(trials):
        planted = random_element(graph, rng)
        moved = transformed(graph, planted)
        noisy = moved.with_tensors({k: (v + 1e-3 * np.std(v) * rng.standard_normal(v.shape)).astype(v.dtype)
                                    if v.dtype.kind == "f" else v for k, v in moved.tensors.items()})
        recovered += is_identity(compose(graph, planted, match(graph, noisy, seed=trial).element), rtol=5e-2)
    assert recovered == trials


@pytest.mark.parametrize("name", list(MODELS))
def test_aligning_another_model_keeps_its_function(tmp_path, name):
    """Matching two independent models returns an element of the group, whatever it finds: the
    aligned model computes what it computed before (rotary query/key dimensions stay in place,
    query heads move with their key/value head)."""
    graph = _saved(tmp_path, name)
    other = _saved(tmp_path, f"{name}-other", _reinitialized(name))
    reference = _outputs_with(tmp_path, name, other.tensors)
    result = match(graph, other)
    assert result.objective > result.naive_objective
    assert relative_difference(_outputs_with(tmp_path, name, result.aligned), reference) < RTOL


def _reinitialized(name: str, seed: int = 7):
    """Another model of the family: the test model's class and config, initialized from ``seed``."""
    model = MODELS[name][0]
    torch.manual_seed(seed)
    return type(model)(model.config).double().eval()


@pytest.mark.parametrize("name", list(MODELS))
def test_planted_copy_is_a_near_duplicate_and_a_sibling_is_not(tmp_path, name):
    graph = _saved(tmp_path, name)
    sibling = _saved(tmp_path, f"{name}-sibling", _reinitialized(name))
    rng = np.random.default_rng(3)
    copy_graph = random_transform(graph, rng)
    # the hardest broken copy of a transformer: query or key units reach no output linearly
    broken = graph.with_tensors(uncoupled_permutation(graph, rng, kinds=None if name in CNNS else ("query", "key")))
    torch.manual_seed(0)
    encoder = build_encoder("scale_gmn", dim=32, hidden=32)
    groups = near_duplicate_groups(["a", "copy", "sibling", "broken"],
                                   model_prints([graph, copy_graph, sibling, broken], encoder))
    assert [g["members"] for g in groups] == [["a", "copy"]]


def test_a_config_that_lies_falls_back_with_its_reason(tmp_path):
    """A head count that does not divide the width: no wrong symmetry, a per-layer graph with the
    reason; a parameter the layout has no place for likewise."""
    import json

    folder = tmp_path / "liar"
    MODELS["bert"][0].save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "num_attention_heads": 5}))
    graph = build_graph(open_checkpoint(str(folder)))
    assert graph.mode == "per_layer" and {g.symmetry for g in graph.node_groups} == {"none"}
    assert graph.info["fallback"] == "BERT-style encoder: 5 heads do not divide the attention width 32"
    tensors = dict(open_checkpoint(str(folder)).tensors)
    save_checkpoint({**tensors, "bert.encoder.layer.0.mystery.weight": np.ones((3, 3))},
                    str(tmp_path / "extra.safetensors"), {"num_attention_heads": "4"})
    graph = build_graph(open_checkpoint(str(tmp_path / "extra.safetensors")))
    assert graph.mode == "per_layer" and "'bert.encoder.layer.0.mystery.weight' has no place" in graph.info["fallback"]


def test_a_model_type_that_lies_changes_nothing(tmp_path):
    """The tensors decide the family, not ``model_type``: BERT weights under a config that claims
    LLaMA get BERT's graph."""
    import json

    honest = _saved(tmp_path, "bert")
    folder = tmp_path / "claims-llama"
    MODELS["bert"][0].save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    liar = build_graph(open_checkpoint(str(folder)))
    assert (liar.node_groups, liar.edge_blocks) == (honest.node_groups, honest.edge_blocks)


def test_gpt2_layout_round_trips_exactly_and_a_bad_fused_projection_falls_back(tmp_path):
    """GPT-2's graph reads its ``Conv1D`` weights transposed and ``c_attn`` split in three, as views;
    putting them back gives the checkpoint's exact tensors. A fused projection that is no three
    equal parts gets the per-layer graph with the reason."""
    from pipeline.graph.layouts import graph_tensors

    folder = tmp_path / "gpt2"
    MODELS["gpt2"][0].save_pretrained(folder)
    ckpt = open_checkpoint(str(folder))
    graph = build_graph(ckpt)
    assert "transformer.h.0.attn.c_attn.q.weight" in graph.tensors
    assert all(np.shares_memory(graph.tensors[n], ckpt.tensors[n]) for n in graph.tensors if n in ckpt.tensors)
    back = checkpoint_tensors(graph.tensors)
    assert list(back) == list(ckpt.tensors)
    assert all(back[n].shape == t.shape and np.array_equal(back[n], t) for n, t in ckpt.tensors.items())
    assert checkpoint_tensors(graph_tensors(back)).keys() == back.keys()
    bad = {**ckpt.tensors, "transformer.h.1.attn.c_attn.bias": np.zeros(95, np.float32)}
    save_checkpoint(bad, str(tmp_path / "bad.safetensors"), {"format": "pt"})
    graph = build_graph(open_checkpoint(str(tmp_path / "bad.safetensors")))
    assert graph.mode == "per_layer" and "no fused query/key/value projection" in graph.info["fallback"]


def test_rebasin_job_writes_gpt2_checkpoints_the_real_model_loads(tmp_path):
    """Aligning a permuted GPT-2 copy to its original writes the aligned and the merged checkpoint
    in GPT-2's own layout: ``from_pretrained`` loads both, and both compute the original's outputs."""
    from pipeline.rebasin.fanout import Options, Pair, align_pair

    graph = _saved(tmp_path, "gpt2")
    copy = tmp_path / "gpt2-copy"
    copy.mkdir()
    save_checkpoint(checkpoint_tensors(random_transform(graph, np.random.default_rng(4)).tensors),
                    str(copy / "model.safetensors"), {"format": "pt"})
    shutil.copy(tmp_path / "gpt2" / "config.json", copy / "config.json")
    row = align_pair(Pair(str(tmp_path / "gpt2"), str(copy), {}, {}),
                     Options(out_dir=str(tmp_path / "out"), save_aligned=True, merge_alpha=0.5))
    assert "error" not in row and row["objective"] > row["naive_objective"]
    reference = logits(*MODELS["gpt2"])
    for path in (row["aligned_path"], str(tmp_path / "out" / "merged" / f"{row['pair']}.safetensors")):
        tensors = open_checkpoint(path).tensors
        assert "transformer.h.0.attn.c_attn.weight" in tensors
        assert relative_difference(_outputs_with(tmp_path, "gpt2", tensors), reference) < RTOL


@pytest.mark.parametrize("name", ["llama_gqa", "t5_gated", "gpt2", "mobilenet_v2", "efficientnet", "regnet"])
def test_no_broken_layer_is_a_near_duplicate(tmp_path, name):
    """Every breakable layer broken in turn (rows permuted without the next layer's columns): no
    broken copy passes the near-duplicate checks, gated units (``gate_proj``, ``wi_0``), relative
    position biases, squeeze-and-excitation and layers deep in residual stages included."""
    from pipeline.search.duplicates import DuplicateThresholds, pair_evidence
    from pipeline.symmetry import breakable_groups

    graph = _saved(tmp_path, name)
    torch.manual_seed(0)
    encoder = build_encoder("scale_gmn", dim=32, hidden=32)
    original = model_prints([graph], encoder)[0]
    rng = np.random.default_rng(5)
    passing = [graph.node_groups[i].name for i in breakable_groups(graph) if DuplicateThresholds().accept(pair_evidence(
        original, model_prints([graph.with_tensors(uncoupled_permutation(graph, rng, group=i))], encoder)[0],
        original.symmetry))]
    assert passing == []
