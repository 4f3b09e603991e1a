"""Every encoder is exactly invariant to the symmetries it claims (to 1e-5 relative), is not
invariant to a real change of function, and the wiring-aware ones are not invariant to an uncoupled
permutation. The ScaleGMN node states are equivariant."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from models import family_models
from pipeline.checkpoint import open_checkpoint, save_checkpoint
from pipeline.encoders import ENCODERS, WIRING_AWARE, build_encoder, embed, prepare
from pipeline.encoders.probes import probe_images, probe_inputs
from pipeline.graph import build_graph
from pipeline.symmetry import apply, perm_key, random_element, uncoupled_permutation

FAMILIES = family_models()
#: what each encoder claims: kwargs of random_element
CLAIMS = {"scale_gmn": dict(permute=True, scale=True, sign=True),
          "scale_gmn_no_probes": dict(permute=True, scale=True, sign=True),
          "neural_graphs": dict(permute=True, scale=False, sign=False),
          "equivariant_gnn": dict(permute=True, scale=False, sign=False)}


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("encoders")
    out = {}
    for name, (model, metadata, _) in FAMILIES.items():
        save_checkpoint(model.state_dict(), str(folder / f"{name}.safetensors"), metadata)
        out[name] = build_graph(open_checkpoint(str(folder / f"{name}.safetensors")))
    return out


def _encoder(name: str, graphs, dtype=torch.float32):
    """A small untrained encoder. Sensitivity tests use float64, where rounding noise is ~1e-15, so
    any difference above 1e-9 is the encoder seeing the change, not arithmetic."""
    torch.manual_seed(0)
    encoder = build_encoder(name, dim=32, **({"hidden": 32} if name not in ("pca",) else {})).to(dtype)
    if name == "pca":
        encoder.fit([prepare(g, dtype) for g in graphs.values()])
    return encoder


def _with(graph, tensors):
    return dataclasses.replace(graph, tensors=tensors)


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


@pytest.mark.parametrize("encoder_name", sorted(CLAIMS))
@pytest.mark.parametrize("family", list(FAMILIES))
def test_invariant_to_claimed_symmetries(graphs, encoder_name, family):
    graph = graphs[family]
    encoder = _encoder(encoder_name, graphs)
    reference = embed(encoder, [graph])
    rng = np.random.default_rng(1)
    for _ in range(2):
        element = random_element(graph, rng, **CLAIMS[encoder_name])
        moved = embed(encoder, [_with(graph, apply(graph, element))])
        assert _relative(moved, reference) < 1e-5


@pytest.mark.parametrize("encoder_name", sorted(ENCODERS))
@pytest.mark.parametrize("family", ["mlp_relu", "cnn", "bert"])
def test_not_invariant_to_a_change_of_function(graphs, encoder_name, family):
    graph = graphs[family]
    encoder = _encoder(encoder_name, graphs, torch.float64)
    rng = np.random.default_rng(2)
    changed = {n: (t + 0.3 * np.abs(t).mean() * rng.standard_normal(t.shape)).astype(t.dtype)
               if t.dtype.kind == "f" else t for n, t in graph.tensors.items()}
    assert _relative(embed(encoder, [_with(graph, changed)]), embed(encoder, [graph])) > 1e-9


@pytest.mark.parametrize("encoder_name", WIRING_AWARE)
@pytest.mark.parametrize("family", list(FAMILIES))
def test_wiring_aware_encoders_see_uncoupled_permutations(graphs, encoder_name, family):
    graph = graphs[family]
    encoder = _encoder(encoder_name, graphs, torch.float64)
    moved = embed(encoder, [_with(graph, uncoupled_permutation(graph, np.random.default_rng(3)))])
    assert _relative(moved, embed(encoder, [graph])) > 1e-9


def test_equivariant_gnn_is_blind_to_uncoupled_permutations(graphs):
    """The seed's per-layer design, documented in its docstring."""
    graph = graphs["mlp_relu"]
    encoder = _encoder("equivariant_gnn", graphs, torch.float64)
    moved = embed(encoder, [_with(graph, uncoupled_permutation(graph, np.random.default_rng(3)))])
    assert _relative(moved, embed(encoder, [graph])) < 1e-12


@pytest.mark.parametrize("family", ["mlp", "mlp_relu", "resmlp", "cnn", "siren", "bert"])
def test_scale_gmn_node_states_are_equivariant(graphs, family):
    graph = graphs[family]
    encoder = _encoder("scale_gmn", graphs).eval()
    element = random_element(graph, np.random.default_rng(4))
    with torch.no_grad():
        states, _ = encoder.node_states(prepare(graph))
        moved, _ = encoder.node_states(prepare(_with(graph, apply(graph, element))))
    for i, group in enumerate(graph.node_groups):
        expected = states[i]
        if group.symmetry != "none":
            perm = torch.from_numpy(element.perms[perm_key(graph, i)])
            expected = expected[perm]
            if i in element.factors:
                expected = expected * torch.from_numpy(element.factors[i])[:, None].float()
        assert _relative(moved[i], expected) < 1e-5, group.name


def test_invariance_on_real_zoo_members(tiny_zoo):
    """Trained members of every family of the generated zoo, full symmetry group, every encoder that
    claims it."""
    folder, catalog = tiny_zoo
    rows = catalog.to_pylist()
    members = {r["family"]: r for r in rows}
    rng = np.random.default_rng(5)
    for family, row in sorted(members.items()):
        graph = build_graph(open_checkpoint(str(folder / row["path"])))
        for encoder_name, claims in CLAIMS.items():
            encoder = _encoder(encoder_name, {family: graph})
            moved = embed(encoder, [_with(graph, apply(graph, random_element(graph, rng, **claims)))])
            assert _relative(moved, embed(encoder, [graph])) < 1e-5, (family, encoder_name)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_probe_features_are_the_networks_outputs(graphs, family):
    """The probe executor computes exactly what the network computes (dense layers; convolutions with
    stride 1, same padding and global average pooling), and declines the graphs it cannot execute
    (normalization, flattened feature maps, attention, sine networks)."""
    model = FAMILIES[family][0]
    probes = prepare(graphs[family], torch.float64).outputs_at_probes
    if family not in ("mlp", "mlp_relu", "resmlp", "cnn"):
        assert probes is None
        return
    width = graphs[family].node_groups[0].size
    x = probe_images(width) if family == "cnn" else probe_inputs(width)
    with torch.no_grad():
        expected = torch.asinh(model.double()(x)).T
    model.float()
    assert probes.shape == expected.shape
    assert _relative(probes, expected) < 1e-6


@pytest.mark.parametrize("family", list(FAMILIES))
def test_weight_statistics_are_invariant_and_see_magnitudes(graphs, family):
    """Block statistics in the scale canonical form do not move under permutations, positive
    scalings and sign flips, but do when every weight doubles (a different function)."""
    graph = graphs[family]
    reference = prepare(graph, torch.float64).statistics
    assert torch.isfinite(reference).all()
    rng = np.random.default_rng(3)
    for _ in range(3):
        moved = prepare(_with(graph, apply(graph, random_element(graph, rng))), torch.float64).statistics
        assert _relative(moved, reference) < 1e-6, family
    doubled = prepare(_with(graph, {k: 2 * v for k, v in graph.tensors.items()}), torch.float64).statistics
    assert _relative(doubled, reference) > 1e-3, family
