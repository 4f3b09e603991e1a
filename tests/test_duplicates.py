"""Planted near-duplicates compute their parent's function (up to fine-tuning), and near-duplicate
detection finds every planted copy and groups nothing else."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.checkpoint import open_checkpoint
from pipeline.encoders import build_encoder, embed, prepare
from pipeline.graph import build_graph
from pipeline.search.duplicates import (DuplicateThresholds, fingerprint, fingerprint_distance, near_duplicate_groups,
                                        output_fingerprint, wiring_fingerprint)
from pipeline.symmetry import uncoupled_permutation
from pipeline.testing import assert_invariant, assert_not_invariant
from pipeline.zoo.train import rebuild_model


@pytest.fixture(scope="module")
def zoo(tiny_zoo):
    folder, catalog = tiny_zoo
    rows = {r["model_id"]: r for r in catalog.to_pylist()}
    graphs = {m: build_graph(open_checkpoint(str(folder / r["path"]))) for m, r in rows.items()}
    return rows, graphs


def _outputs(row, graph):
    model, data = rebuild_model(row, graph.tensors)
    with torch.no_grad():
        return model(data.x_test[:64])


def test_planted_copies_compute_the_parents_function(zoo):
    rows, graphs = zoo
    copies = [r for r in rows.values() if r["duplicate_of"]]
    assert len(copies) == 6 and {r["transform"] for r in copies} == {"symmetry", "symmetry+finetune5"}
    assert len({r["family"] for r in copies}) == 5
    for copy in copies:
        parent = rows[copy["duplicate_of"]]
        assert graphs[copy["model_id"]].info["content_id"] != graphs[parent["model_id"]].info["content_id"]
        ours, theirs = _outputs(copy, graphs[copy["model_id"]]), _outputs(parent, graphs[parent["model_id"]])
        difference = float((ours - theirs).abs().max() / theirs.abs().max())
        if copy["transform"] == "symmetry":
            assert difference < 1e-5
        else:
            assert 0 < difference < 0.1


def test_fingerprint_is_invariant_and_continuous(zoo):
    _, graphs = zoo
    rng = np.random.default_rng(0)
    for graph in graphs.values():
        reference = fingerprint(graph)
        assert_invariant(fingerprint, graph, rng, trials=1, rtol=1e-6)
        noisy = {n: (t * (1 + 1e-4 * rng.standard_normal(t.shape))).astype(t.dtype) for n, t in graph.tensors.items()}
        assert 1e-7 < fingerprint_distance(fingerprint(graph.with_tensors(noisy)), reference) < 1e-3


def test_wiring_fingerprint_is_invariant_and_sees_the_wiring(zoo):
    """The linear response is exactly invariant to the whole group of every zoo family, and an
    uncoupled permutation of a dense network changes it (an INR's 2-input response can survive one,
    and a transformer's query and key units reach no output linearly)."""
    _, graphs = zoo
    rng = np.random.default_rng(1)
    for graph in graphs.values():
        assert_invariant(wiring_fingerprint, graph, rng, trials=1)
        if graph.family in ("mlp", "resnet", "cnn"):
            broken = graph.with_tensors(uncoupled_permutation(graph, rng))
            assert_not_invariant(wiring_fingerprint, graph, broken, 1e-4)


def test_near_duplicate_groups_are_exactly_the_planted_copies(zoo):
    rows, graphs = zoo
    ids = sorted(graphs)
    torch.manual_seed(0)
    vectors = embed(build_encoder("scale_gmn", dim=32, hidden=32), [graphs[m] for m in ids]).numpy()
    groups = near_duplicate_groups(ids, vectors, [fingerprint(graphs[m]) for m in ids],
                                   [wiring_fingerprint(graphs[m]) for m in ids],
                                   [output_fingerprint(prepare(graphs[m])) for m in ids], DuplicateThresholds())
    found = sorted(tuple(g["members"]) for g in groups)
    planted = sorted(tuple(sorted((r["model_id"], r["duplicate_of"]))) for r in rows.values() if r["duplicate_of"])
    assert found == planted


def test_broken_copies_are_not_near_duplicates(zoo):
    """An uncoupled permutation keeps every block's singular values (the fingerprint) but computes a
    different function: the wiring fingerprint keeps it out of the groups."""
    _, graphs = zoo
    rng = np.random.default_rng(0)
    ids, prints, wirings = [], [], []
    for name in sorted(graphs):
        graph = graphs[name]
        if graph.family != "mlp" or graph.activation != "tanh":  # no scaling: the fingerprint is blind
            continue
        broken = graph.with_tensors(uncoupled_permutation(graph, rng))
        for suffix, g in (("", graph), ("-broken", broken)):
            ids.append(name + suffix)
            prints.append(fingerprint(g))
            wirings.append(wiring_fingerprint(g))
    assert len(ids) >= 4
    assert all(fingerprint_distance(prints[i], prints[i + 1]) < 1e-6 for i in range(0, len(ids), 2))
    same = np.ones((len(ids), 4))  # embeddings that would let every pair through
    assert near_duplicate_groups(ids, same, prints, wirings, thresholds=DuplicateThresholds()) == []


def test_what_the_networks_compute_vetoes_every_broken_copy(zoo):
    """With every other check switched off, the outputs at the probe inputs alone keep the broken
    copy of every network the executor runs (dense, residual, convolutional and sine networks) out,
    and every planted copy of them in (fine-tuned ones included)."""
    rows, graphs = zoo
    outputs_only = DuplicateThresholds(min_cosine=-1.0, max_distance=np.inf, max_wiring_distance=np.inf)
    rng = np.random.default_rng(2)
    ids, prints, wirings, outputs, expected = [], [], [], [], []
    for name in sorted(graphs):
        graph = graphs[name]
        if graph.family == "transformer" or rows[name]["duplicate_of"]:
            continue
        broken = graph.with_tensors(uncoupled_permutation(graph, rng))
        for suffix, g in (("", graph), ("-broken", broken)):
            ids.append(name + suffix)
            prints.append(np.zeros(1, np.float32))  # every pair a candidate
            wirings.append(wiring_fingerprint(g))
            outputs.append(output_fingerprint(prepare(g)))
        assert outputs[-1].size, f"{graph.family} network was not run"
    for copy in (r for r in rows.values() if r["duplicate_of"] and r["family"] != "transformer"):
        ids.append(copy["model_id"])
        prints.append(np.zeros(1, np.float32)), wirings.append(wiring_fingerprint(graphs[copy["model_id"]]))
        outputs.append(output_fingerprint(prepare(graphs[copy["model_id"]])))
        expected.append((copy["duplicate_of"], copy["model_id"]))
    groups = near_duplicate_groups(ids, np.ones((len(ids), 4)), prints, wirings, outputs, outputs_only,
                                   k=len(ids))
    found = {tuple(sorted((p["a"], p["b"]))) for g in groups for p in g["pairs"]}
    assert found == {tuple(sorted(pair)) for pair in expected}
