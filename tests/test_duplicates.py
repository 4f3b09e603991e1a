"""Planted near-duplicates compute their parent's function (up to fine-tuning), and near-duplicate
detection finds every planted copy and groups nothing else."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from pipeline.checkpoint import open_checkpoint
from pipeline.encoders import build_encoder
from pipeline.graph import build_graph
from pipeline.search.duplicates import (DuplicateThresholds, Prints, fingerprint, fingerprint_distance, model_prints,
                                        near_duplicate_groups, wiring_fingerprint)
from pipeline.symmetry import uncoupled_permutation
from pipeline.testing import assert_invariant, assert_not_invariant, random_transform
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
    uncoupled permutation changes it (an INR's 2-input response can survive one), a transformer's
    query or key units included (they reach no output linearly: the query-key circuit sees them)."""
    _, graphs = zoo
    rng = np.random.default_rng(1)
    flat = lambda g: np.concatenate(wiring_fingerprint(g))  # noqa: E731
    for graph in graphs.values():
        assert_invariant(flat, graph, rng, trials=1)
        if graph.family in ("mlp", "resnet", "cnn", "transformer"):
            broken = graph.with_tensors(uncoupled_permutation(graph, rng))
            assert_not_invariant(flat, graph, broken, 1e-4)


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return build_encoder("scale_gmn", dim=32, hidden=32)


def test_near_duplicate_groups_are_exactly_the_planted_copies(zoo, encoder):
    rows, graphs = zoo
    ids = sorted(graphs)
    groups = near_duplicate_groups(ids, model_prints([graphs[m] for m in ids], encoder))
    found = sorted(tuple(g["members"]) for g in groups)
    planted = sorted(tuple(sorted((r["model_id"], r["duplicate_of"]))) for r in rows.values() if r["duplicate_of"])
    assert found == planted


def _with(prints: Prints, **changes) -> Prints:
    return dataclasses.replace(prints, **changes)


def test_broken_copies_are_not_near_duplicates(zoo, encoder):
    """An uncoupled permutation keeps every block's singular values (the fingerprint) but computes a
    different function: with the embedding check switched off and the networks not run, the wiring
    fingerprint alone keeps it out of the groups."""
    _, graphs = zoo
    rng = np.random.default_rng(0)
    ids, prints = [], []
    for name in sorted(graphs):
        graph = graphs[name]
        if graph.family != "mlp" or graph.activation != "tanh":  # no scaling: the fingerprint is blind
            continue
        broken = graph.with_tensors(uncoupled_permutation(graph, rng))
        for suffix, g in (("", graph), ("-broken", broken)):
            ids.append(name + suffix)
            prints.append(_with(model_prints([g], encoder)[0], vector=np.ones(4), outputs=np.zeros(0)))
    assert len(ids) >= 4
    assert all(fingerprint_distance(prints[i].fingerprint, prints[i + 1].fingerprint) < 1e-6
               for i in range(0, len(ids), 2))
    assert near_duplicate_groups(ids, prints) == []


def test_what_the_networks_compute_vetoes_every_broken_copy(zoo, encoder):
    """With every other check switched off, the outputs at the probe inputs alone keep the broken
    copy of every network the executor runs (dense, residual, convolutional and sine networks) out,
    and every planted copy of them in (fine-tuned ones included)."""
    rows, graphs = zoo
    outputs_only = DuplicateThresholds(min_cosine=-1.0, max_distance=np.inf, max_wiring_distance=np.inf)
    rng = np.random.default_rng(2)
    ids, prints, expected = [], [], []

    def add(name, graph):
        ids.append(name)
        prints.append(_with(model_prints([graph], encoder)[0], fingerprint=np.zeros(1, np.float32)))  # all candidates
        assert prints[-1].outputs.size, f"{graph.family} network was not run"

    for name in sorted(graphs):
        graph = graphs[name]
        if graph.family == "transformer" or rows[name]["duplicate_of"]:
            continue
        add(name, graph)
        add(name + "-broken", graph.with_tensors(uncoupled_permutation(graph, rng)))
    for copy in (r for r in rows.values() if r["duplicate_of"] and r["family"] != "transformer"):
        add(copy["model_id"], graphs[copy["model_id"]])
        expected.append(tuple(sorted((copy["duplicate_of"], copy["model_id"]))))
    groups = near_duplicate_groups(ids, prints, outputs_only, k=len(ids))
    assert {tuple(sorted((p["a"], p["b"]))) for g in groups for p in g["pairs"]} == set(expected)


def test_unknown_activation_tries_each_candidate_group(tmp_path, encoder):
    """Bare state dicts with no activation record: a permuted copy matches under permutations, a
    sign-flipped copy of a tanh network under signs, a rescaled copy of a ReLU network under positive
    scalings, each reported with its group; two independently initialized networks match under none."""
    from pipeline.zoo.models import MLP

    torch.manual_seed(3)
    rng = np.random.default_rng(3)
    ids, prints, expected = [], [], {}
    for activation, claim, group in (("relu", dict(scale=False, sign=False), "perm"),
                                     ("tanh", dict(scale=False), "perm_sign"),
                                     ("relu", dict(), "perm_scale")):
        parent = build_graph_of(MLP(6, [24, 24], 3, activation).state_dict(), tmp_path / f"{group}.pt")
        assert parent.activation == "unknown"
        known = build_graph_of(parent.tensors, tmp_path / f"{group}-told.pt", activation)
        copy = parent.with_tensors(random_transform(known, rng, **claim).tensors)
        for name, graph in ((group, parent), (f"{group}-copy", copy)):
            ids.append(name)
            prints.append(model_prints([graph], encoder)[0])
        expected[group] = (group, f"{group}-copy")
    stranger = build_graph_of(MLP(6, [24, 24], 3, "relu").state_dict(), tmp_path / "stranger.pt")
    ids.append("stranger"), prints.append(model_prints([stranger], encoder)[0])
    groups = near_duplicate_groups(ids, prints)
    found = {(g["members"][0], g["members"][1]): g["pairs"][0]["group"] for g in groups}
    assert found == {pair: group for group, pair in expected.items()}


def build_graph_of(state: dict, path, activation: str | None = None):
    """A bare ``torch.save`` state dict, read back (with an activation hint if given)."""
    torch.save({k: torch.as_tensor(np.asarray(v)) for k, v in state.items()}, path)
    return build_graph(open_checkpoint(str(path)), command_line={"activation": activation} if activation else None)
