"""The group actions of pipeline.symmetry preserve every family's function exactly, and an uncoupled
permutation (not a symmetry) does not. This also checks the graph's symmetry annotations."""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from models import example_input, family_models
from pipeline.checkpoint import open_checkpoint, save_checkpoint
from pipeline.graph import build_graph
from pipeline.symmetry import apply, canonical_scaling, random_element, uncoupled_permutation

FAMILIES = family_models()


def _graph_and_model(tmp_path, name):
    model, metadata, _ = FAMILIES[name]
    model = model.double()
    save_checkpoint(model.state_dict(), str(tmp_path / f"{name}.safetensors"), metadata)
    return build_graph(open_checkpoint(str(tmp_path / f"{name}.safetensors"))), model


def _outputs(model, tensors, x):
    clone = copy.deepcopy(model)
    clone.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in tensors.items()})
    with torch.no_grad():
        return clone(x if x.dtype == torch.long else x.double()).numpy()


@pytest.mark.parametrize("name", list(FAMILIES))
def test_random_group_element_preserves_the_function(tmp_path, name):
    graph, model = _graph_and_model(tmp_path, name)
    x = example_input(name, model)
    reference = _outputs(model, graph.tensors, x)
    rng = np.random.default_rng(0)
    for _ in range(3):
        element = random_element(graph, rng)
        transformed = apply(graph, element)
        assert any(not np.array_equal(transformed[n], graph.tensors[n]) for n in graph.tensors)
        out = _outputs(model, transformed, x)
        np.testing.assert_allclose(out, reference, rtol=1e-9, atol=1e-9 * np.abs(reference).max())


@pytest.mark.parametrize("name", list(FAMILIES))
def test_uncoupled_permutation_changes_the_function(tmp_path, name):
    graph, model = _graph_and_model(tmp_path, name)
    x = example_input(name, model)
    reference = _outputs(model, graph.tensors, x)
    out = _outputs(model, uncoupled_permutation(graph, np.random.default_rng(0)), x)
    assert np.abs(out - reference).max() > 1e-3 * np.abs(reference).max()


def test_uncoupled_permutation_needs_a_hidden_layer(tmp_path):
    save_checkpoint({"a.mystery": torch.randn(3, 4), "b": torch.randn(5)}, str(tmp_path / "odd.safetensors"))
    assert uncoupled_permutation(build_graph(open_checkpoint(str(tmp_path / "odd.safetensors"))),
                                 np.random.default_rng(0)) is None


@pytest.mark.parametrize("name", ["mlp_relu", "resmlp", "cnn"])  # families with ReLU-scalable units
def test_scale_canonical_form_keeps_the_function_and_forgets_the_scaling(tmp_path, name):
    graph, model = _graph_and_model(tmp_path, name)
    x = example_input(name, model)
    canonical = apply(graph, canonical_scaling(graph))
    np.testing.assert_allclose(_outputs(model, canonical, x), _outputs(model, graph.tensors, x), rtol=1e-9,
                               atol=1e-9 * np.abs(_outputs(model, graph.tensors, x)).max())
    rescaled = dataclasses.replace(graph, tensors=apply(graph, random_element(graph, np.random.default_rng(1),
                                                                              permute=False, sign=False)))
    assert any(not np.allclose(rescaled.tensors[n], graph.tensors[n]) for n in graph.tensors)
    again = apply(rescaled, canonical_scaling(rescaled))
    for n in graph.tensors:
        np.testing.assert_allclose(again[n], canonical[n], rtol=1e-9, atol=1e-12)
