"""The canonicalization autoencoder: a model's whole orbit collapses to one latent and one canonical
network (and the permutation-only ablation does not collapse rescaled copies), the canonical network
is an ordinary checkpoint of the target architecture, the functional loss trains, and the jobs run
under Ray with bad input refused by name."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipeline.autoencoder import Autoencoder, probe_inputs, target_of
from pipeline.autoencoder.canonical import canonical_forms
from pipeline.autoencoder.trainer import batch_loss
from pipeline.checkpoint import open_checkpoint, save_checkpoint
from pipeline.checkpoint.reader import Checkpoint
from pipeline.commands import canonicalize, evaluate_autoencoder, train_autoencoder
from pipeline.graph import build_graph
from pipeline.testing import random_transform, relative_difference
from pipeline.zoo.models import Siren, SmallCNN
from pipeline.zoo.train import rebuild_model

ROWS = {
    "inr": {"family": "inr", "arch": json.dumps({"widths": [32, 32]}), "activation": "sine", "task": "inr_digits"},
    "cnn_relu": {"family": "cnn", "arch": json.dumps({"channels": 16, "num_convs": 3}, sort_keys=True),
                 "activation": "relu", "task": "digits"},
    "cnn_tanh": {"family": "cnn", "arch": json.dumps({"channels": 16, "num_convs": 3}, sort_keys=True),
                 "activation": "tanh", "task": "digits"},
}


def _graph(name: str, seed: int = 0):
    torch.manual_seed(seed)
    model = Siren([32, 32]) if name == "inr" else SmallCNN(activation=ROWS[name]["activation"])
    tensors = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    meta = {"activation": ROWS[name]["activation"], "family": ROWS[name]["family"]}
    return build_graph(Checkpoint("memory", "memory", tensors, meta))


def _autoencoder(name: str, encoder: str = "scale_gmn") -> Autoencoder:
    torch.manual_seed(0)
    return Autoencoder(target_of(ROWS[name]), encoder, latent=32).eval()


@pytest.mark.parametrize("name", list(ROWS))
def test_an_orbit_collapses_to_one_latent_and_one_canonical_network(name):
    graph, model = _graph(name), _autoencoder(name)
    assert model.target.num_params == {"inr": 1185}.get(name, 4970)  # the seed's two target architectures
    with torch.no_grad():
        z, decoded = model([model.prepare(graph)])
        rng = np.random.default_rng(0)
        for _ in range(10):
            z_moved, decoded_moved = model([model.prepare(random_transform(graph, rng))])
            assert relative_difference(z_moved, z) < 1e-5
            assert relative_difference(decoded_moved, decoded) < 1e-5


def test_the_permutation_only_ablation_does_not_collapse_rescaled_copies():
    graph, model = _graph("cnn_relu"), _autoencoder("cnn_relu", "neural_graphs")
    with torch.no_grad():
        z, _ = model([model.prepare(graph)])
        rng = np.random.default_rng(1)
        permuted = random_transform(graph, rng, scale=False)
        assert relative_difference(model([model.prepare(permuted)])[0], z) < 1e-5
        rescaled = random_transform(graph, rng, permute=False)
        assert relative_difference(model([model.prepare(rescaled)])[0], z) > 1e-4  # float noise: 1e-6


def test_a_canonical_network_is_an_ordinary_checkpoint_of_the_target(tmp_path):
    graph, model = _graph("cnn_tanh"), _autoencoder("cnn_tanh")
    (form,), (error,) = canonical_forms(model, [graph])
    moved, _ = canonical_forms(model, [random_transform(graph, np.random.default_rng(2))])
    assert all(relative_difference(moved[0][n], form[n]) < 1e-5 for n in form)
    assert error > 0
    save_checkpoint(form, str(tmp_path / "canonical.safetensors"), {"activation": "tanh"})
    reread = build_graph(open_checkpoint(str(tmp_path / "canonical.safetensors")))
    assert (reread.family, reread.mode) == ("cnn", "computational")
    rebuilt, data = rebuild_model(model.target.row(), form)
    assert rebuilt(data.x_test[:4]).shape == (4, 10)


def test_the_functional_loss_trains_the_autoencoder():
    """A few steps on four INRs: the decoded networks' renderings approach their inputs'."""
    model = _autoencoder("inr").train()
    graphs = [_graph("inr", seed) for seed in range(4)]
    x = probe_inputs(model.target)[0]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    first = None
    for _ in range(40):
        loss, _ = batch_loss(model, graphs, x, "cpu")
        first = first if first is not None else float(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(loss) < 0.5 * first


def test_training_and_canonicalize_jobs_and_bad_input(indexed, tmp_path):
    """The training job under Ray Train on the tiny zoo's INRs, then the canonicalize job over a
    folder of three INRs, a CNN, a truncated file and a NaN INR, two at a time: three canonical
    networks, three typed refusals, and their merge across batches."""
    zoo, rows = indexed["zoo"], indexed["rows"]
    report = train_autoencoder.main([
        "--graphs", indexed["graphs"], "--catalog", indexed["catalog"], "--family", "inr", "--latent", "32",
        "--epochs", "2", "--warmup-steps", "5", "--out", str(tmp_path / "runs")])
    assert report["target"] == "inr_sine" and np.isfinite(report["val_loss"])
    folder = tmp_path / "in"
    folder.mkdir()
    inrs = [r for r in rows if r["family"] == "inr"][:3]
    cnn = next(r for r in rows if r["family"] == "cnn")
    for r in inrs + [cnn]:
        (folder / r["path"].split("/")[-1]).write_bytes((zoo / r["path"]).read_bytes())
    (folder / "truncated.safetensors").write_bytes((zoo / inrs[0]["path"]).read_bytes()[:200])
    nan = dict(open_checkpoint(str(zoo / inrs[0]["path"])).tensors)
    nan["layers.0.bias"] = np.full_like(nan["layers.0.bias"], np.nan)
    save_checkpoint(nan, str(folder / "nan.safetensors"), {"activation": "sine", "family": "inr"})
    table = canonicalize.main(["--autoencoder", report["exported"], "--input", str(folder),
                                           "--out", str(tmp_path / "canonical"),
                                           "--merge", str(tmp_path / "merged.safetensors"),
                                           "--batch-size", "2"]).to_pylist()
    kinds = {r["source_path"].split("/")[-1]: r["error_kind"] for r in table}
    assert kinds[cnn["path"].split("/")[-1]] == "UnsupportedArchitecture"
    assert kinds["truncated.safetensors"] == "CorruptCheckpoint"
    assert kinds["nan.safetensors"] is not None
    written = [r for r in table if r["error_kind"] is None]
    assert len(written) == 3 and all(np.isfinite(r["reconstruction_error"]) for r in written)
    canonical = open_checkpoint(written[0]["canonical_path"])
    assert canonical.metadata["canonical_of"] == written[0]["source_path"]
    merged = open_checkpoint(str(tmp_path / "merged.safetensors"))  # the mean of the three canonical forms
    forms = [open_checkpoint(r["canonical_path"]).tensors for r in written]
    for name, t in merged.tensors.items():
        np.testing.assert_allclose(t, np.mean([f[name] for f in forms], axis=0), rtol=1e-5, atol=1e-7)
    assert len(json.loads(merged.metadata["merged_from"])) == 3


def test_evaluate_job_writes_the_report_and_the_issue_metrics(indexed, tmp_path):
    """On the tiny zoo's INRs (its training split: the tiny zoo holds out too few), a 2-epoch
    autoencoder: metrics.json with the issue's keys, the orbit collapsed, finite barriers, PNGs."""
    report = train_autoencoder.main([
        "--graphs", indexed["graphs"], "--catalog", indexed["catalog"], "--family", "inr", "--latent", "32",
        "--epochs", "1", "--warmup-steps", "5", "--out", str(tmp_path / "runs")])
    out = tmp_path / "report"
    metrics = evaluate_autoencoder.main([
        "--graphs", indexed["graphs"], "--catalog", indexed["catalog"], "--autoencoders", report["exported"],
        "--out", str(out), "--split", "train", "--held-out", "4", "--orbit", "5", "--pairs", "2"])
    assert {"inr_train_mse", "inr_test_mse", "orbit_max_rel_diff", "inr_equiv_barrier_ae", "inr_equiv_barrier_rebasin",
            "cnn_relu_l1_error", "merge8_acc_ae", "canonicalize_per_s"} <= set(metrics)
    assert metrics["orbit_max_rel_diff"] < 1e-5 and np.isfinite(metrics["inr_test_mse"])
    assert metrics["inr_train_mse"] == metrics["inr_test_mse"]  # --split train: the same models
    assert np.isfinite(metrics["inr_equiv_barrier_ae"]) and np.isfinite(metrics["inr_equiv_barrier_rebasin"])
    assert json.loads((out / "metrics.json").read_text())["inr_test_mse"] == metrics["inr_test_mse"]
    assert (out / "latents-inr_sine.png").read_bytes()[:4] == b"\x89PNG" and (out / "report.md").exists()
