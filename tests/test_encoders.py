"""Every encoder is exactly invariant to the symmetries it claims (to 1e-5 relative), is not
invariant to a real change of function, and the wiring-aware ones are not invariant to an uncoupled
permutation. The ScaleGMN node states are equivariant."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from models import family_models
from pipeline.checkpoint import open_checkpoint, save_checkpoint
from pipeline.constants import NUM_PROBES
from pipeline.encoders import ENCODERS, WIRING_AWARE, build_encoder, embed, prepare
from pipeline.encoders.graph_input import stack
from pipeline.encoders.output_profile import NUM_PROFILE, output_profile
from pipeline.encoders.probes import ProbeInputs, load_probe_inputs, probe_images, probe_inputs, probe_inputs_of
from pipeline.graph import build_graph
from pipeline.symmetry import perm_key, random_element, transformed, uncoupled_permutation
from pipeline.testing import assert_invariant, assert_not_invariant, relative_difference

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


def _embedding(encoder):
    return lambda graph: embed(encoder, [graph])


@pytest.mark.parametrize("encoder_name", sorted(CLAIMS))
@pytest.mark.parametrize("family", list(FAMILIES))
def test_invariant_to_claimed_symmetries(graphs, encoder_name, family):
    assert_invariant(_embedding(_encoder(encoder_name, graphs)), graphs[family], np.random.default_rng(1),
                     **CLAIMS[encoder_name])


@pytest.mark.parametrize("encoder_name", sorted(ENCODERS))
@pytest.mark.parametrize("family", ["mlp_relu", "cnn", "bert"])
def test_not_invariant_to_a_change_of_function(graphs, encoder_name, family):
    graph = graphs[family]
    encoder = _encoder(encoder_name, graphs, torch.float64)
    rng = np.random.default_rng(2)
    changed = {n: (t + 0.3 * np.abs(t).mean() * rng.standard_normal(t.shape)).astype(t.dtype)
               if t.dtype.kind == "f" else t for n, t in graph.tensors.items()}
    assert_not_invariant(_embedding(encoder), graph, graph.with_tensors(changed))


@pytest.mark.parametrize("encoder_name", WIRING_AWARE)
@pytest.mark.parametrize("family", list(FAMILIES))
def test_wiring_aware_encoders_see_uncoupled_permutations(graphs, encoder_name, family):
    graph = graphs[family]
    encoder = _encoder(encoder_name, graphs, torch.float64)
    broken = graph.with_tensors(uncoupled_permutation(graph, np.random.default_rng(3)))
    assert_not_invariant(_embedding(encoder), graph, broken)


def test_equivariant_gnn_is_blind_to_uncoupled_permutations(graphs):
    """The seed's per-layer design, documented in its docstring."""
    graph = graphs["mlp_relu"]
    encoder = _encoder("equivariant_gnn", graphs, torch.float64)
    moved = embed(encoder, [graph.with_tensors(uncoupled_permutation(graph, np.random.default_rng(3)))])
    assert relative_difference(moved, embed(encoder, [graph])) < 1e-12


@pytest.mark.parametrize("family", ["mlp", "mlp_relu", "resmlp", "cnn", "siren", "bert"])
def test_scale_gmn_node_states_are_equivariant(graphs, family):
    graph = graphs[family]
    encoder = _encoder("scale_gmn", graphs).eval()
    element = random_element(graph, np.random.default_rng(4))
    with torch.no_grad():
        states, _ = encoder.node_states(stack([prepare(graph)]))
        moved, _ = encoder.node_states(stack([prepare(transformed(graph, element))]))
    for i, group in enumerate(graph.node_groups):
        expected = states[i][0]
        if group.symmetry != "none":
            perm = torch.from_numpy(element.perms[perm_key(graph, i)])
            expected = expected[perm]
            if i in element.factors:
                expected = expected * torch.from_numpy(element.factors[i])[:, None].float()
        assert relative_difference(moved[i][0], expected) < 1e-5, group.name


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
            assert_invariant(_embedding(_encoder(encoder_name, {family: graph})), graph, rng, trials=1, **claims)


def _own_probes(graph, images: bool, side: int = 8) -> ProbeInputs:
    """Probe inputs of an encoder for networks reading ``graph``'s input layer (random data)."""
    width = graph.node_groups[0].size
    shape = (NUM_PROBES + 3, width, side, side) if images else (NUM_PROBES + 3, width)
    return ProbeInputs().set({"x": np.random.default_rng(1).normal(size=shape)})


@pytest.mark.parametrize("own", [False, True], ids=["default_probes", "own_probes"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_probe_features_are_the_networks_outputs(graphs, family, own):
    """The probe executor computes exactly what the network computes (dense layers; convolutions with
    stride 1, same padding and global average pooling) at the default probe inputs or at an
    encoder's own (images of another size too), and declines the graphs it cannot execute
    (normalization, flattened feature maps, attention, sine networks)."""
    model = FAMILIES[family][0]
    own_probes = _own_probes(graphs[family], family == "cnn", side=12) if own else None
    probes = prepare(graphs[family], torch.float64, probes=own_probes).outputs_at_probes
    if family not in ("mlp", "mlp_relu", "resmlp", "cnn"):
        assert probes is None
        return
    width = graphs[family].node_groups[0].size
    x = probe_images(width) if family == "cnn" else probe_inputs(width)
    if own:
        default, x = x, own_probes.images(width) if family == "cnn" else own_probes.dense(width)
        assert x.shape[0] == NUM_PROBES and (x.shape != default.shape or relative_difference(x, default) > 0.1)
    with torch.no_grad():
        expected = torch.asinh(model.double()(x)).T
    model.float()
    assert probes.shape == expected.shape
    assert relative_difference(probes, expected) < 1e-6


@pytest.mark.parametrize("encoder_name", ["scale_gmn", "neural_graphs"])
def test_own_probe_inputs_travel_with_the_encoder_state(graphs, encoder_name, tmp_path):
    """An encoder's own probe inputs change its embeddings of the networks they fit, are saved in its
    state and restored by a freshly built encoder (embeddings equal), and a bad probe file is refused
    with its reason."""
    graph = graphs["cnn"]
    encoder = _encoder(encoder_name, graphs, torch.float64)
    default = embed(encoder, [graph])
    probe_inputs_of(encoder).set({"digits_like": _own_probes(graph, images=True).images(1).numpy()})
    own = embed(encoder, [graph])
    assert relative_difference(own, default) > 1e-3
    assert relative_difference(embed(encoder, [graphs["mlp"]]), embed(_encoder(encoder_name, graphs, torch.float64),
                                                                      [graphs["mlp"]])) < 1e-12  # no set for it
    torch.save(encoder.state_dict(), tmp_path / "state.pt")
    fresh = _encoder(encoder_name, graphs, torch.float64)
    fresh.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert torch.equal(embed(fresh, [graph]), own)

    np.savez(tmp_path / "short.npz", x=np.zeros((NUM_PROBES - 1, 4)))
    np.savez(tmp_path / "nan.npz", x=np.full((NUM_PROBES, 4), np.nan))
    np.savez(tmp_path / "twice.npz", a=np.zeros((NUM_PROBES, 1, 8, 8)), b=np.zeros((NUM_PROBES, 1, 5, 5)))
    np.savez(tmp_path / "objects.npz", x=np.array([{"a": 1}], dtype=object))
    with open(tmp_path / "plain.npz", "wb") as f:  # an .npy under another name
        np.save(f, np.zeros((NUM_PROBES, 4)))
    for name, reason in (("short", "expected"), ("nan", "non-finite"), ("twice", "a second set"),
                         ("objects", "pickle"), ("plain", "not a .npz archive")):
        with pytest.raises(ValueError, match=reason):
            ProbeInputs().set(load_probe_inputs(str(tmp_path / f"{name}.npz")))


def test_output_profile_reads_the_outputs_as_logits():
    """The profile of known logits: 12 probes split 6/4/2 over classes 0/1/2 with margin 3 and
    otherwise equal logits; a constant network (uniform softmax, one class chosen by every probe);
    a single-output network."""
    logits = torch.zeros(12, 10, dtype=torch.float64)
    logits[torch.arange(12), torch.tensor([0] * 6 + [1] * 4 + [2] * 2)] = 3.0
    profile = output_profile(torch.asinh(logits).T)
    assert profile.shape == (NUM_PROFILE,)
    p_top = np.exp(3) / (np.exp(3) + 9)
    entropy = -(p_top * np.log(p_top) + 9 * (1 - p_top) / 9 * np.log((1 - p_top) / 9)) / np.log(10)
    std = np.std([3] + [0] * 9, ddof=1)
    shares = np.array([6, 4, 2, 0, 0]) / 12
    expected = np.concatenate([[entropy] * 3, [np.arcsinh(3)] * 3, [np.arcsinh(std)] * 3, shares,
                               [-(shares[:3] * np.log(shares[:3])).sum()]])
    np.testing.assert_allclose(profile.numpy(), expected, atol=1e-9)
    constant = output_profile(torch.zeros(10, 12, dtype=torch.float64))
    np.testing.assert_allclose(constant.numpy(), [1] * 3 + [0] * 6 + [1, 0, 0, 0, 0, 0], atol=1e-12)
    single = output_profile(torch.randn(1, 12, dtype=torch.float64))
    np.testing.assert_allclose(single.numpy(), [0] * 9 + [1, 0, 0, 0, 0, 0], atol=1e-12)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_weight_statistics_are_invariant_and_see_magnitudes(graphs, family):
    """Block statistics in the scale canonical form do not move under permutations, positive
    scalings and sign flips, but do when every weight doubles (a different function)."""
    graph = graphs[family]

    def statistics(g):
        return prepare(g, torch.float64).statistics

    assert torch.isfinite(statistics(graph)).all()
    # computed in float64 from float32 weights: the transformed weights' rounding, not the statistics, sets rtol
    assert_invariant(statistics, graph, np.random.default_rng(3), trials=3, rtol=1e-6)
    assert_not_invariant(statistics, graph, graph.with_tensors({k: 2 * v for k, v in graph.tensors.items()}), 1e-3)


def test_network_outputs_run_sine_networks(graphs):
    """The function check runs SIRENs at their frequency: exactly what the network computes."""
    from pipeline.encoders.executor import network_outputs

    model = FAMILIES["siren"][0]
    outputs = network_outputs(prepare(graphs["siren"], torch.float64))
    with torch.no_grad():
        expected = torch.asinh(model.double()(probe_inputs(2))).T
    model.float()
    assert relative_difference(outputs, expected) < 1e-9


@pytest.mark.parametrize("encoder_name", sorted(ENCODERS))
def test_weights_stored_at_16_bits_embed_as_their_float32_values(graphs, encoder_name):
    """bf16 weights stay bf16 in the prepared input (a large model is not held twice) and every
    encoder reads them as the same values at float32."""
    from pipeline.checkpoint.dtypes import BF16
    from pipeline.encoders.prepare import graph_input

    graph = graphs["mlp_relu"]
    low = graph.with_tensors({k: np.asarray(v).astype(BF16) for k, v in graph.tensors.items()})
    wide = graph.with_tensors({k: v.astype(np.float32) for k, v in low.tensors.items()})
    assert {b.weight.dtype for b in graph_input(low).blocks if b.weight is not None} == {torch.bfloat16}
    encoder = _encoder(encoder_name, graphs)
    torch.testing.assert_close(embed(encoder, [low]), embed(encoder, [wide]), rtol=0, atol=0)


def test_models_of_one_architecture_embed_together_as_alone(tiny_zoo):
    """The graph encoders stack models of one architecture into one tensor program: each model's
    embedding is the one it gets alone (to 1e-5), whatever else shares its batch, in order."""
    folder, catalog = tiny_zoo
    rows = [r for r in catalog.to_pylist() if r["family"] in ("mlp", "cnn", "inr", "transformer")]
    graphs = [build_graph(open_checkpoint(str(folder / r["path"]))) for r in rows[:24]]
    assert len({(g.family, g.num_params) for g in graphs}) < len(graphs)  # some share an architecture
    for name in ("scale_gmn", "neural_graphs"):
        encoder = _encoder(name, {g.info["content_id"]: g for g in graphs})
        together = embed(encoder, graphs)
        alone = torch.cat([embed(encoder, [g]) for g in graphs])
        assert relative_difference(together, alone) < 1e-5, name
