"""Lineage from weights alone, on lineage-zoo trees grown here (a ReLU MLP and a tanh CNN family,
two trees each): the pair tests read each derivation's type and direction after alignment, the
MoTHer baseline is blind where a child was re-based, and the job recovers and scores the forest."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.testing import assert_invariant, assert_not_invariant, random_transform

BASES = [("wine", "mlp", {"tag": "relu", "activation": "relu", "arch": {"widths": [32, 32]}}),
         ("digits", "cnn", {"tag": "tanh", "activation": "tanh", "epochs": 2})]


@pytest.fixture(scope="module")
def lineage_zoo(ray_session, tmp_path_factory):
    """Two trees of each of ``BASES`` with their catalog rows, a broken file beside them."""
    from pipeline.zoo.lineage import lineage_catalog_rows

    out = tmp_path_factory.mktemp("lineage-zoo")
    rows = lineage_catalog_rows(str(out), seed=0, bases=BASES, trees=2)
    (out / "models" / "broken.safetensors").write_bytes(b"\x00" * 12)
    return out, rows


def _graph(folder, row):
    from pipeline.checkpoint import open_checkpoint
    from pipeline.graph import build_graph

    return build_graph(open_checkpoint(str(folder / row["path"])))


def _edges(rows, kind):
    by_id = {r["model_id"]: r for r in rows}
    return [(by_id[r["parents"][0]], r) for r in rows if r["edge_type"] == kind and not r["transformed"]]


@pytest.mark.parametrize("kind", ["cast", "prune", "symmetry", "lora", "partial_finetune", "finetune"])
def test_pair_tests_read_the_derivation_and_its_direction(lineage_zoo, kind):
    from pipeline.lineage.evidence import edge_type, pair_evidence

    folder, rows = lineage_zoo
    pairs = _edges(rows, kind)
    assert pairs, f"the zoo grew no untransformed {kind} edge"
    for parent, child in pairs:
        a, b = _graph(folder, parent), _graph(folder, child)
        read, direction = edge_type(pair_evidence(a, b))
        assert read == kind, (parent["model_id"], child["model_id"], read)
        if kind in ("cast", "prune"):  # the artefact is the child, whichever way the pair is read
            assert direction == 1.0 and edge_type(pair_evidence(b, a)) == (kind, -1.0)


def test_distance_after_alignment_is_invariant_and_the_raw_one_is_not(lineage_zoo):
    from pipeline.lineage.evidence import pair_evidence
    from pipeline.symmetry import uncoupled_permutation

    folder, rows = lineage_zoo
    parent, child = _edges(rows, "finetune")[0]
    a, b = _graph(folder, parent), _graph(folder, child)
    rng = np.random.default_rng(0)
    assert_invariant(lambda g: pair_evidence(a, g)["distance"], b, rng, rtol=1e-4)
    moved = random_transform(b, rng)
    assert pair_evidence(a, moved)["raw_distance"] > 10 * pair_evidence(a, b)["raw_distance"]
    assert pair_evidence(a, moved)["rebased"] and not pair_evidence(a, b)["rebased"]
    broken = b.with_tensors(uncoupled_permutation(b, rng))  # not a symmetry: a different function
    assert_not_invariant(lambda g: pair_evidence(a, g)["distance"], b, broken, min_change=1e-2)


def test_candidates_pair_each_model_with_its_nearest_of_its_architecture(lineage_zoo):
    from pipeline.lineage.forest import candidate_pairs

    folder, rows = lineage_zoo
    graphs = {r["model_id"]: _graph(folder, r) for r in rows}
    family = {r["model_id"]: r["family"] for r in rows}
    pairs = candidate_pairs(sorted(graphs), graphs, k=3)
    assert all(family[a] == family[b] for a, b in pairs)  # one architecture per pair
    assert all(sum(i in pair for pair in pairs) >= 3 for i in graphs)
    one = rows[5]["model_id"]
    wider = candidate_pairs(sorted(graphs), graphs, k=10, query={one})
    assert all(one in pair for pair in wider) and len(wider) == 10
    assert set(wider) >= set(candidate_pairs(sorted(graphs), graphs, k=3, query={one}))  # the nearest 3 among 10


def test_a_merge_is_the_average_of_its_parents_and_of_no_other_pair(lineage_zoo):
    from pipeline.lineage.evidence import MERGE_TOL, merge_residual

    folder, rows = lineage_zoo
    by_id = {r["model_id"]: r for r in rows}
    merge = next(r for r in rows if r["edge_type"] == "merge")
    first, second = (_graph(folder, by_id[p]) for p in merge["parents"])
    residual, alpha, apart = merge_residual(_graph(folder, merge), first, second)
    assert residual < MERGE_TOL < apart and abs(alpha - 0.5) < 1e-3
    base = by_id[merge["tree"]]
    assert merge_residual(_graph(folder, merge), _graph(folder, base), first)[0] > 100 * MERGE_TOL


def test_job_recovers_the_forest_better_than_mother_where_children_were_rebased(lineage_zoo, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.commands import lineage

    folder, rows = lineage_zoo
    catalog = tmp_path / "catalog.parquet"
    pq.write_table(pa.Table.from_pylist(rows), catalog)
    out = tmp_path / "out"
    summary = lineage.main([str(folder / "models"), "--out", str(out), "--evaluate", str(catalog)])
    metrics = json.loads((out / "metrics.json").read_text())
    assert summary["models"] == len(rows) and summary["errors"] == 1
    errors = pq.read_table(out / "errors.parquet").to_pylist()
    assert errors[0]["source_path"].endswith("broken.safetensors") and errors[0]["error"]
    assert (out / "lineage.png").read_bytes()[:4] == b"\x89PNG"
    # the trees are found as trees, edges are typed, and re-based children are no blind spot
    assert metrics["ari"] >= 0.9 and metrics["type_acc"] >= 0.9 and metrics["direction_acc"] >= 0.9
    assert metrics["edge_f1"] >= 0.85 and metrics["edge_f1"] > metrics["mother_edge_f1"] + 0.2
    assert metrics["edge_f1_transformed"] >= 0.7 and metrics["mother_edge_f1_transformed"] <= 0.1
    # a merge's children hang from the merge, though the merge joins the spanning forest last
    recovered = {(e["parent"], e["child"]) for e in pq.read_table(out / "lineage.parquet").to_pylist()}
    of_merges = [(p, r["model_id"]) for r in rows for p in r["parents"] if p.endswith("merge")]
    assert of_merges and all(pair in recovered for pair in of_merges), sorted(set(of_merges) - recovered)

    table = pq.read_table(out / "lineage.parquet")
    assert set(table.column("type").to_pylist()) <= {"finetune", "partial_finetune", "lora", "cast", "merge",
                                                     "prune", "symmetry"}
    leaf = next(r["model_id"] for r in rows if r["depth"] >= 3 and r["edge_type"] != "symmetry")
    found = lineage.main(["--out", str(out), "--model", leaf])
    assert [e["child"] for e in found["ancestors"]][0] == leaf and found["ancestors"][-1]["parent"] == \
        next(r["tree"] for r in rows if r["model_id"] == leaf)


def test_one_optimizer_run_is_flatter_than_two(lineage_zoo):
    """A fine-tune's update, read in its parent's basis, is flatter than what separates it from a
    sibling (two runs' difference) or from its grandparent (two runs' sum); the flatness is
    unchanged when the child is re-based, and a permutation that breaks the network changes it."""
    from pipeline.lineage.forest import update_flatness
    from pipeline.rebasin.matching import match
    from pipeline.symmetry import uncoupled_permutation
    from pipeline.zoo.lineage import finetune

    folder, rows = lineage_zoo
    base = next(r for r in rows if r["depth"] == 0 and r["family"] == "mlp")
    graph = _graph(folder, base)
    tensors = {n: np.asarray(t, np.float32) for n, t in graph.tensors.items()}
    rng = np.random.default_rng(3)
    first, second = finetune(base, tensors, rng)[0], finetune(base, tensors, rng)[0]
    grandchild = finetune(base, first, rng)[0]

    def flatness(parent: dict, child) -> float:
        aligned = match(graph.with_tensors(parent), child).aligned
        return update_flatness({n: np.asarray(aligned[n], np.float64) - parent[n] for n in parent})

    one = flatness(tensors, graph.with_tensors(first))
    assert one > flatness(second, graph.with_tensors(first)) and one > 1.1 * 0.2  # a Gaussian's ratio: 0.2
    assert flatness(first, graph.with_tensors(grandchild)) > flatness(tensors, graph.with_tensors(grandchild))
    child = graph.with_tensors(first)
    assert_invariant(lambda g: flatness(tensors, g), child, rng, rtol=1e-3)
    broken = child.with_tensors(uncoupled_permutation(child, rng))
    assert_not_invariant(lambda g: flatness(tensors, g), child, broken, min_change=1e-2)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_lineage_of_scikit_learn_models_nobody_here_wrote(ray_session, tmp_path):
    """Bare state dicts written by scikit-learn, no activation recorded: a base, the base fine-tuned
    by ``partial_fit`` on half of the classes, that fine-tune re-uploaded under a random group
    element, and a model of another seed. The job finds the fine-tune and the copy, typed and in
    order, and no relative for the other seed."""
    import copy

    import pyarrow.parquet as pq
    import torch
    from models import sklearn_mlp, sklearn_state
    from sklearn.datasets import load_digits

    from pipeline.checkpoint import open_checkpoint
    from pipeline.graph import build_graph
    from pipeline.lineage.job import run_lineage

    base, state, _ = sklearn_mlp(0, max_iter=40)
    x, y = load_digits(return_X_y=True)
    tuned = copy.deepcopy(base)
    for _ in range(20):
        tuned.partial_fit(x[y < 5] / 16, y[y < 5])
    torch.save(state, tmp_path / "base.pt")
    torch.save(sklearn_state(tuned), tmp_path / "tuned.pt")
    torch.save(sklearn_mlp(1, max_iter=40)[1], tmp_path / "other-seed.pt")
    graph = build_graph(open_checkpoint(str(tmp_path / "tuned.pt")))
    moved = random_transform(graph, np.random.default_rng(0))
    torch.save({n: torch.from_numpy(np.array(t)) for n, t in moved.tensors.items()}, tmp_path / "reupload.pt")

    summary = run_lineage([str(tmp_path)], str(tmp_path / "out"), plot=False)
    edges = {(r["parent"], r["child"]): r["type"] for r in pq.read_table(tmp_path / "out" / "lineage.parquet").to_pylist()}
    assert summary["models"] == 4 and summary["errors"] == 0
    assert edges == {("base", "tuned"): "finetune", ("tuned", "reupload"): "symmetry"}, edges


def test_the_rank_of_an_update_is_exact_through_the_sketch_of_a_large_matrix():
    from pipeline.lineage.evidence import RANK_SKETCH, _rank

    rng = np.random.default_rng(0)
    out, fan_in = RANK_SKETCH + 172, RANK_SKETCH + 392  # both sides above the sketch: read through it
    for rank in (1, 4, 40, RANK_SKETCH - 1):
        update = (rng.standard_normal((out, rank)) @ rng.standard_normal((rank, fan_in))).astype(np.float32)
        assert _rank(update) == rank and _rank(update.reshape(out, fan_in // 8, 8)) == rank
    assert _rank(rng.standard_normal((out, 2 * RANK_SKETCH)) @ rng.standard_normal((2 * RANK_SKETCH, fan_in))) == out
    assert _rank(rng.standard_normal((40, 3)) @ rng.standard_normal((3, 60))) == 3  # small: decomposed whole


def test_lora_canonical_factors_forget_the_factors_symmetry():
    from pipeline.checkpoint.adapter import canonical_factors

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((4, 24)), rng.standard_normal((16, 4))
    g = rng.standard_normal((4, 4)) + 4 * np.eye(4)  # invertible
    a2, b2 = canonical_factors(np.linalg.solve(g, a), b @ g)
    a1, b1 = canonical_factors(a, b)
    assert np.allclose(b1 @ a1, b @ a) and np.allclose(a2, a1) and np.allclose(b2, b1)
    a3, b3 = canonical_factors(a, b + 0.01 * rng.standard_normal(b.shape))  # another update: another form
    assert not np.allclose(a3, a1, atol=1e-4)


def _adapter_copy(folder, row, tmp_path, name, edit_config=None, edit_tensors=None):
    """A copy of ``row``'s adapter folder under ``tmp_path/name``, declaring its base by absolute
    path, its config and factors edited."""
    import shutil

    from pipeline.checkpoint import open_checkpoint, save_checkpoint

    target = tmp_path / name
    shutil.copytree(folder / row["adapter"], target)
    config = json.loads((target / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(folder / "models" / f"{row['parents'][0]}.safetensors")
    (target / "adapter_config.json").write_text(json.dumps(edit_config(config) if edit_config else config))
    if edit_tensors:
        tensors = {n: np.array(t) for n, t in open_checkpoint(str(target / "adapter_model.safetensors")).tensors.items()}
        save_checkpoint(edit_tensors(tensors), str(target / "adapter_model.safetensors"))
    return target


def test_adapters_are_merged_into_their_declared_base_and_bad_ones_recorded(lineage_zoo, tmp_path):
    import pyarrow.parquet as pq

    from pipeline.checkpoint import open_checkpoint
    from pipeline.checkpoint.adapter import AdapterError, base_of, merge, open_adapter
    from pipeline.lineage.job import run_lineage

    folder, rows = lineage_zoo
    row = next(r for r in rows if r["adapter"] and not r["transformed"])
    adapter = open_adapter(str(folder / row["adapter"]))
    merged = merge(adapter, open_checkpoint(base_of(adapter)))  # the zoo's relative base path resolves
    stored = open_checkpoint(str(folder / row["path"])).tensors
    assert max(float(np.abs(merged[n] - np.asarray(stored[n], np.float32)).max()) for n in stored) < 1e-5

    good = _adapter_copy(folder, row, tmp_path / "in", "good")
    _adapter_copy(folder, row, tmp_path / "in", "no-base", lambda c: {**c, "base_model_name_or_path": "org/missing"})
    _adapter_copy(folder, row, tmp_path / "in", "lying-rank", lambda c: {**c, "r": c["r"] + 4})
    _adapter_copy(folder, row, tmp_path / "in", "foreign-module", edit_tensors=lambda t: {
        n.replace("base_model.model.", "base_model.model.nope."): v for n, v in t.items()})
    summary = run_lineage([str(tmp_path / "in"), str(folder / "models" / f"{row['parents'][0]}.safetensors")],
                          str(tmp_path / "out"), plot=False)
    assert summary["adapters"] == 1 and summary["errors"] == 3
    edges = [e for e in pq.read_table(tmp_path / "out" / "lineage.parquet").to_pylist() if e["child"] == good.name]
    assert [(e["parent"], e["type"]) for e in edges] == [(row["parents"][0], "lora")]
    assert json.loads(edges[0]["evidence"])["verified"]
    errors = {e["source_path"].rsplit("/", 1)[-1]: e["error"] for e in pq.read_table(tmp_path / "out" / "errors.parquet").to_pylist()}
    assert errors["no-base"].startswith("UnlinkedAdapter") and "org/missing" in errors["no-base"]
    assert "config says r=" in errors["lying-rank"]
    assert "not in the base" in errors["foreign-module"]
    with pytest.raises(AdapterError):
        open_adapter(str(tmp_path / "in" / "lying-rank"))


def test_ingestion_stores_an_adapter_merged_and_linked_to_its_base(lineage_zoo, tmp_path):
    import pyarrow.parquet as pq

    from pipeline.ingest import IngestConfig, run_ingest
    from pipeline.ingest.store import read_manifest

    folder, rows = lineage_zoo
    row = next(r for r in rows if r["adapter"] and not r["transformed"])
    base = folder / "models" / f"{row['parents'][0]}.safetensors"
    good = _adapter_copy(folder, row, tmp_path / "in", "good")
    _adapter_copy(folder, row, tmp_path / "in", "no-base", lambda c: {**c, "base_model_name_or_path": "org/missing"})
    summary = run_ingest(IngestConfig([str(tmp_path / "in"), str(base)], str(tmp_path / "graphs")))
    assert (summary["converted"], summary["error"]) == (2, 1)
    manifest = {r["source_path"]: r for r in read_manifest(str(tmp_path / "graphs")).to_pylist()}
    assert manifest[str(good)]["base"] == str(base) and manifest[str(base)]["base"] is None
    assert manifest[str(good)]["family"] == manifest[str(base)]["family"]
    (error,) = pq.read_table(tmp_path / "graphs" / "errors.parquet").to_pylist()
    assert error["error_kind"] == "UnlinkedAdapter" and "org/missing" in error["error"]
