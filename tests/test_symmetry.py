"""The group actions of pipeline.symmetry preserve every family's function exactly, and an uncoupled
permutation (not a symmetry) does not. This also checks the graph's symmetry annotations."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from models import example_input, family_models
from pipeline.checkpoint import open_checkpoint, save_checkpoint
from pipeline.graph import build_graph
from pipeline.symmetry import apply, canonical_scaling, uncoupled_permutation
from pipeline.testing import assert_different_function, assert_same_function, random_transform

FAMILIES = family_models()


def _graph_and_model(tmp_path, name):
    model, metadata, _ = FAMILIES[name]
    model = model.double()
    save_checkpoint(model.state_dict(), str(tmp_path / f"{name}.safetensors"), metadata)
    return build_graph(open_checkpoint(str(tmp_path / f"{name}.safetensors"))), model


@pytest.mark.parametrize("name", list(FAMILIES))
def test_random_group_element_preserves_the_function(tmp_path, name):
    graph, model = _graph_and_model(tmp_path, name)
    x = example_input(name, model)
    rng = np.random.default_rng(0)
    for _ in range(3):
        moved = random_transform(graph, rng)
        assert any(not np.array_equal(moved.tensors[n], graph.tensors[n]) for n in graph.tensors)
        assert_same_function(model, moved.tensors, graph.tensors, x)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_uncoupled_permutation_changes_the_function(tmp_path, name):
    graph, model = _graph_and_model(tmp_path, name)
    x = example_input(name, model)
    assert_different_function(model, uncoupled_permutation(graph, np.random.default_rng(0)), graph.tensors, x)


def test_uncoupled_permutation_needs_a_hidden_layer(tmp_path):
    save_checkpoint({"a.mystery": torch.randn(3, 4), "b": torch.randn(5)}, str(tmp_path / "odd.safetensors"))
    assert uncoupled_permutation(build_graph(open_checkpoint(str(tmp_path / "odd.safetensors"))),
                                 np.random.default_rng(0)) is None


@pytest.mark.parametrize("name", ["mlp_relu", "resmlp", "cnn"])  # families with ReLU-scalable units
def test_scale_canonical_form_keeps_the_function_and_forgets_the_scaling(tmp_path, name):
    graph, model = _graph_and_model(tmp_path, name)
    x = example_input(name, model)
    canonical = apply(graph, canonical_scaling(graph))
    assert_same_function(model, canonical, graph.tensors, x)
    rescaled = random_transform(graph, np.random.default_rng(1), permute=False, sign=False)
    assert any(not np.allclose(rescaled.tensors[n], graph.tensors[n]) for n in graph.tensors)
    again = apply(rescaled, canonical_scaling(rescaled))
    for n in graph.tensors:
        np.testing.assert_allclose(again[n], canonical[n], rtol=1e-9, atol=1e-12)
