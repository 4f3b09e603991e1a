"""Re-basin: the aligned model computes B's function for every family, planted group elements are
recovered exactly, a non-symmetry is not undone, and the Ray job aligns zoo pairs (recording a bad
pair as an error)."""
from __future__ import annotations

import copy
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from models import example_input, family_models
from pipeline.checkpoint import open_checkpoint, save_checkpoint
from pipeline.graph import build_graph
from pipeline.rebasin import match, matching, permutation_spec
from pipeline.rebasin.interpolate import Path as InterpolationPath
from pipeline.rebasin.interpolate import export_merged, interpolate, plot_paths
from pipeline.symmetry import apply, compose, is_identity, random_element, uncoupled_permutation
from pipeline.testing import assert_different_function, assert_same_function
from pipeline.commands import rebasin

FAMILIES = family_models()


def _reinitialized(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """The same architecture with fresh parameters (and BatchNorm statistics)."""
    torch.manual_seed(seed)
    other = copy.deepcopy(model)
    for module in other.modules():
        if hasattr(module, "reset_parameters") and module is not other:
            module.reset_parameters()
        if isinstance(module, (torch.nn.BatchNorm2d, torch.nn.LayerNorm)):
            torch.nn.init.uniform_(module.weight, 0.5, 1.5)
            torch.nn.init.uniform_(module.bias, -0.5, 0.5)
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    return other.eval()


def _graph(tmp_path, name: str, tensors: dict, tag: str):
    path = str(tmp_path / f"{name}-{tag}.safetensors")
    save_checkpoint(tensors, path, FAMILIES[name][1])
    return build_graph(open_checkpoint(path))



def _noisy(tensors: dict, rng: np.random.Generator, relative: float = 1e-3) -> dict:
    """Each float tensor plus Gaussian noise of ``relative`` times its RMS."""
    return {k: (v + relative * np.sqrt(np.mean(np.square(v, dtype=np.float64))) * rng.standard_normal(v.shape)
                ).astype(v.dtype) if v.dtype.kind == "f" else v for k, v in tensors.items()}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_aligned_model_computes_the_same_function(tmp_path, name):
    model, _, _ = FAMILIES[name]
    other = _reinitialized(model, 7)
    graph_a = _graph(tmp_path, name, model.state_dict(), "a")
    graph_b = _graph(tmp_path, name, other.state_dict(), "b")
    result = match(graph_a, graph_b)
    assert any(not np.array_equal(result.aligned[n], graph_b.tensors[n]) for n in graph_b.tensors)
    assert result.objective >= result.naive_objective
    assert {n: t.shape for n, t in result.aligned.items()} == {n: t.shape for n, t in graph_b.tensors.items()}
    assert_same_function(other, result.aligned, graph_b.tensors, example_input(name, model))
    np.testing.assert_array_equal(apply(graph_b, result.element)[next(iter(graph_b.tensors))],
                                  result.aligned[next(iter(graph_b.tensors))])


@pytest.mark.parametrize("name", list(FAMILIES))
def test_planted_transformation_is_recovered(tmp_path, name, trials=20):
    """B = g.A + relative 1e-3 noise, g a random permutation with signs (tanh, sine) or positive scales
    (ReLU) where the graph has them: matching returns g^-1, permutations and signs exactly, scales
    within the 5% the noise allows (a neuron scaled by 1/4 sees up to 4x the relative noise)."""
    model, _, _ = FAMILIES[name]
    graph_a = _graph(tmp_path, name, model.state_dict(), "a")
    rng = np.random.default_rng(1)
    recovered = 0
    for trial in range(trials):
        planted = random_element(graph_a, rng)
        graph_b = _graph(tmp_path, name, _noisy(apply(graph_a, planted), rng), "b")
        result = match(graph_a, graph_b, seed=trial)
        recovered += is_identity(compose(graph_a, planted, result.element), rtol=5e-2)
    assert recovered == trials


def test_keeping_b_scales_applies_only_permutations_and_signs(tmp_path):
    name = "mlp_relu"
    model, _, _ = FAMILIES[name]
    other = _reinitialized(model, 7)
    graph_a = _graph(tmp_path, name, model.state_dict(), "a")
    graph_b = _graph(tmp_path, name, other.state_dict(), "b")
    rescaled, kept = match(graph_a, graph_b), match(graph_a, graph_b, rescale=False)
    assert not kept.element.factors and rescaled.element.factors
    assert all(np.array_equal(kept.element.perms[k], p) for k, p in rescaled.element.perms.items())
    assert_same_function(other, kept.aligned, graph_b.tensors, example_input(name, model))
    first = "layers.0.weight"
    np.testing.assert_allclose(np.sort(np.linalg.norm(kept.aligned[first], axis=1)),
                               np.sort(np.linalg.norm(graph_b.tensors[first], axis=1)), rtol=1e-6)


def test_broken_transform_is_not_undone(tmp_path):
    """An uncoupled permutation is no symmetry: the aligned copy keeps the broken function."""
    for name in ("mlp", "mlp_relu", "cnn", "siren"):
        model, _, _ = FAMILIES[name]
        graph_a = _graph(tmp_path, name, model.state_dict(), "a")
        graph_b = _graph(tmp_path, name, uncoupled_permutation(graph_a, np.random.default_rng(0)), "broken")
        aligned = match(graph_a, graph_b).aligned
        x = example_input(name, model)
        assert_different_function(model, aligned, graph_a.tensors, x)
        assert_same_function(model, aligned, graph_b.tensors, x)
        assert any(not np.allclose(aligned[n], graph_a.tensors[n]) for n in graph_a.tensors)


@pytest.mark.parametrize("name", ["mlp", "mlp_relu", "cnn", "siren", "resnet_tv", "bert"])
def test_exact_skip_changes_nothing(tmp_path, name, monkeypatch):
    """Skipping a unit whose neighbours did not change since its last full solve (also after the
    forward pass) gives the same element, objective and sweeps as solving it again."""
    model, _, _ = FAMILIES[name]
    graph_a = _graph(tmp_path, name, model.state_dict(), "a")
    graph_b = _graph(tmp_path, name, _reinitialized(model, 7).state_dict(), "b")
    solves = []
    monkeypatch.setattr(matching, "_lap", lambda cost, lap=matching._lap: solves.append(1) or lap(cost))
    skip = match(graph_a, graph_b, budget=float("inf"))
    with_skips = len(solves)
    monkeypatch.setattr(matching._Descent, "_stamp", lambda self, unit: object())  # never equal: no skips
    full = match(graph_a, graph_b, budget=float("inf"))
    assert len(solves) - with_skips > with_skips
    assert skip.objective == full.objective and (skip.sweeps, skip.restart) == (full.sweeps, full.restart)
    assert all(np.array_equal(p, full.element.perms[k]) for k, p in skip.element.perms.items())
    assert skip.element.factors.keys() == full.element.factors.keys()
    assert all(np.array_equal(q, full.element.factors[i]) for i, q in skip.element.factors.items())


def test_lap_is_exact(monkeypatch):
    """LAPJV (float32, certified by its duals) reaches scipy's optimum, ties and near-ties included;
    without the package scipy answers."""
    from scipy.optimize import linear_sum_assignment

    rng = np.random.default_rng(0)
    costs = [rng.standard_normal((n, n)).astype(np.float32) for n in (1, 2, 3, 17, 300)]
    costs += [rng.integers(0, 3, (n, n)).astype(np.float32) for n in (5, 80)]            # many ties
    costs += [np.abs(rng.standard_normal((64, 8)) @ rng.standard_normal((8, 64))).astype(np.float32),  # rank 8
              np.ones((4, 4), np.float32), 1e6 + rng.standard_normal((50, 50))]
    for lapjv in (matching.lapjv, None):
        monkeypatch.setattr(matching, "lapjv", lapjv)
        for cost in costs:
            rows, cols = np.arange(len(cost)), matching._lap(cost)
            best = linear_sum_assignment(cost, maximize=True)[1]
            assert sorted(cols) == list(rows)
            value, optimum = (np.sum(cost[rows, c], dtype=np.float64) for c in (cols, best))
            assert value >= optimum - 1e-9 * np.abs(cost).sum()


def test_restarts_beat_local_optima_within_the_budget(tmp_path):
    """Restarts never lower ``J`` and raise it on some CNN pairs (local optima of one descent); the
    budget leaves one descent where the first already spent it."""
    name = "cnn"
    model, _, _ = FAMILIES[name]
    graph_a = _graph(tmp_path, name, model.state_dict(), "a")
    gains = []
    for seed in range(1, 6):
        graph_b = _graph(tmp_path, name, _reinitialized(model, seed).state_dict(), "b")
        one, default = match(graph_a, graph_b, restarts=1), match(graph_a, graph_b)
        assert (one.starts, default.starts) == (1, 3) and default.objective >= one.objective
        gains.append(default.objective - one.objective)
        assert match(graph_a, graph_b, budget=0).starts == 1
    assert max(gains) > 1e-3 * abs(one.objective)


def test_spec_of_a_transformer_matches_whole_heads(tmp_path):
    name = "bert"
    graph = _graph(tmp_path, name, FAMILIES[name][0].state_dict(), "a")
    spec = permutation_spec(graph)
    head_units = [u for u in spec.units if len(u) > 1]
    assert sorted(head_units) == [("encoder.layer.0.qk@4", "encoder.layer.0.v@4"), ("encoder.layer.1.qk@4", "encoder.layer.1.v@4")]
    stream = spec.perms["stream"]
    assert stream.heads == 1 and len(stream.groups) == 5
    assert {a.tensor for a in stream.axes} >= {"embeddings.word_embeddings.weight", "embeddings.LayerNorm.weight",
                                               "encoder.layer.0.attention.self.query.weight", "pooler.dense.weight"}


def test_matching_needs_one_architecture(tmp_path):
    graph_a = _graph(tmp_path, "mlp", FAMILIES["mlp"][0].state_dict(), "a")
    graph_b = _graph(tmp_path, "mlp_relu", FAMILIES["mlp_relu"][0].state_dict(), "b")
    with pytest.raises(ValueError, match="architecture"):
        match(graph_a, graph_b)


def test_interpolation_barrier_and_merge(tmp_path):
    path = InterpolationPath(np.linspace(0, 1, 5), np.array([1.0, 2.0, 3.5, 2.5, 2.0]), np.zeros(5), "accuracy")
    assert path.barrier == pytest.approx(3.5 - 1.5)
    a = {"w": np.ones((2, 3), np.float32), "steps": np.array(3)}
    b = {"w": np.full((2, 3), 3.0, np.float32), "steps": np.array(9)}
    np.testing.assert_array_equal(interpolate(a, b, 0.25)["w"], np.full((2, 3), 1.5, np.float32))
    export_merged(a, b, 0.5, str(tmp_path / "merged.safetensors"), {"a": "A", "b": "B"}, {"family": "mlp"})
    merged = open_checkpoint(str(tmp_path / "merged.safetensors"))
    assert merged.metadata["family"] == "mlp" and json.loads(merged.metadata["merged_from"]) == {"a": "A", "b": "B"}
    np.testing.assert_array_equal(merged.tensors["w"], np.full((2, 3), 2.0, np.float32))
    assert merged.tensors["steps"].reshape(-1)[0] == 3
    plot_paths({"naive": path}, str(tmp_path / "curve.png"), "test")
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"


def test_job_aligns_zoo_pairs_and_records_a_bad_pair(tiny_zoo, tmp_path):
    zoo, catalog = tiny_zoo
    rows = [r for r in catalog.to_pylist() if not r.get("duplicate_of")]
    by_cell: dict = {}
    for r in rows:
        by_cell.setdefault((r["task"], r["family"], r["activation"], r["arch"]), []).append(r["model_id"])
    cells = {key[1]: ids for key, ids in by_cell.items() if len(ids) >= 2}
    good = [cells[f][:2] for f in ("mlp", "cnn", "inr") if f in cells]
    bad = [rows[0]["model_id"], next(r["model_id"] for r in rows if r["family"] == "transformer")]
    out = tmp_path / "rb"
    argv = ["--zoo", str(zoo), "--out", str(out), "--merge-alpha", "0.5", "--plots", "--save-aligned"]
    for a, b in good + [bad]:
        argv += ["--pair", a, b]
    result = rebasin.main(argv)
    table = pq.read_table(out / "results.parquet").to_pylist()
    assert len(table) == len(good) + 1
    failed = [r for r in table if r["error"]]
    assert [(r["model_a"], r["model_b"]) for r in failed] == [tuple(bad)] and "architecture" in failed[0]["error"]
    for r in (r for r in table if not r["error"]):
        assert r["objective"] >= r["naive_objective"] and r["barrier_naive"] is not None
        assert r["barrier_rebasin"] is not None and r["seconds"] > 0
        assert (out / "curves" / f"{r['pair']}.png").exists()
        merged = open_checkpoint(str(out / "merged" / f"{r['pair']}.safetensors"))
        assert json.loads(merged.metadata["merged_from"])["b"] == r["model_b"]
        assert open_checkpoint(r["aligned_path"]).metadata["aligned_to"] == r["model_a"]
    assert {s["family"] for s in result["summary"]} >= {f for f in ("mlp", "cnn", "inr") if f in cells}
