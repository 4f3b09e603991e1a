"""Training pieces: retrieval metrics conventions, the contrastive loss, augmentations, and a real
Ray Train run on the tiny zoo that checkpoints and resumes."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from models import example_input, family_models
from pipeline.checkpoint import open_checkpoint, save_checkpoint
from pipeline.evaluation.retrieval import retrieval_metrics
from pipeline.graph import build_graph
from pipeline.testing import assert_same_function
from pipeline.training.augment import augment
from pipeline.training.loss import contrastive_loss


def test_retrieval_metrics_follow_trec_eval():
    # labels a a b b. Query 0 ranks 2(b), 3(b), 1(a): P@1 0, AP 1/3; query 1 likewise 1/3;
    # queries 2 and 3 find their match second: AP 1/2. MAP = 5/12; recall@2 = (0 + 0 + 1 + 1) / 4.
    emb = np.array([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9]])
    m = retrieval_metrics(emb, np.array(["a", "a", "b", "b"]), ks=(1, 2))
    assert (m["p_at_1"], m["map"], m["r_at_2"]) == (0.0, pytest.approx(5 / 12), pytest.approx(0.5))
    perfect = retrieval_metrics(np.array([[1, 0], [1, 0.1], [0, 1], [0.1, 1]]), ["a", "a", "b", "b"])
    assert perfect["p_at_1"] == 1.0 and perfect["map"] == 1.0
    # every item is ranked, so MAP equals scikit-learn's non-interpolated average precision
    from sklearn.metrics import average_precision_score
    rng = np.random.default_rng(0)
    emb, labels = rng.normal(size=(40, 5)), rng.integers(0, 4, 40)
    z = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    expected = np.mean([average_precision_score(np.delete(labels == labels[i], i), np.delete(z @ z[i], i))
                        for i in range(40)])
    assert retrieval_metrics(emb, labels)["map"] == pytest.approx(expected)


def test_contrastive_loss_pulls_in_every_same_task_positive():
    """Two identical views per model (what an invariant encoder gives) do not satisfy the loss on
    their own: same-task models left orthogonal cost far more than same-task models clustered."""
    torch.manual_seed(0)
    groups, good = torch.tensor([0, 0, 1, 1, 2, 2]), torch.ones(6, dtype=torch.bool)
    scattered = torch.eye(6, 8)                                       # every model orthogonal to all others
    clustered = torch.eye(6, 8)[groups * 2] + 0.01 * torch.randn(6, 8)  # same task, same direction
    assert contrastive_loss(scattered, scattered, groups, good, 0.07) > \
        contrastive_loss(clustered, clustered, groups, good, 0.07) + 3.0
    # a low performer's only positive is its own other view: scattered, it costs nothing more
    bad = good.clone()
    bad[0] = False
    assert contrastive_loss(scattered, scattered, groups, bad, 0.07) < \
        contrastive_loss(scattered, scattered, groups, good, 0.07)


@pytest.mark.parametrize("name", ["mlp_relu", "siren", "resnet_tv", "bert"])
def test_augmentation_without_dropconnect_preserves_the_function(tmp_path, name):
    model, metadata, _ = family_models()[name]
    model = model.double()
    save_checkpoint(model.state_dict(), str(tmp_path / "m.safetensors"), metadata)
    graph = build_graph(open_checkpoint(str(tmp_path / "m.safetensors")))
    view = augment(graph, np.random.default_rng(0), permute_fraction=1.0, dropconnect=0.0)
    assert any(not np.array_equal(view.tensors[n], graph.tensors[n]) for n in graph.tensors)
    assert_same_function(model, view.tensors, graph.tensors, example_input(name, model))
    dropped = augment(graph, np.random.default_rng(0), dropconnect=0.5)
    weights = [b.tensor for b in graph.edge_blocks if b.tensor]
    assert np.mean([np.mean(dropped.tensors[w] == 0) for w in weights]) > 0.3


def test_ray_train_run_checkpoints_and_resumes(ray_session, tiny_zoo, tmp_path):
    from pipeline.encoders import probe_inputs_of
    from pipeline.encoders.state import load_trained
    from pipeline.evaluation import evaluate_retrieval
    from pipeline.ingest import IngestConfig, run_ingest
    from pipeline.training import TrainConfig, fit_encoder, load_training_state, refit_metric_head
    from pipeline.training.dataset import labelled_models, labelled_table, split, split_of

    folder, _ = tiny_zoo
    graphs = str(tmp_path / "graphs")
    run_ingest(IngestConfig([str(folder / "models")], graphs))
    models = labelled_models(graphs, str(folder / "catalog.parquet"))
    assert models.num_rows == 60 and set(models.column("split").to_pylist()) == {"train", "val", "test"}
    assert all(split_of(s) == sp for s, sp in zip(models.column("seed").to_pylist(), models.column("split").to_pylist()))

    config = TrainConfig(encoder="scale_gmn", encoder_kwargs={"dim": 32, "hidden": 32, "layers": 2}, epochs=1,
                         batch_size=16, probe_inputs=str(folder / "probe_inputs.npz"))
    first = fit_encoder(graphs, models, config, str(tmp_path / "runs"), "resume-test", cpus_per_worker=0.5)
    assert (first.metrics["epoch"], first.metrics["resumed_at_epoch"]) == (0, 0) and first.checkpoint is not None
    config = dataclasses.replace(config, epochs=2)
    second = fit_encoder(graphs, models, config, str(tmp_path / "runs"), "resume-test", cpus_per_worker=0.5)
    assert (second.metrics["epoch"], second.metrics["resumed_at_epoch"]) == (1, 1)  # not started over

    assert second.get_best_checkpoint("val_map", "max") is not None
    with second.checkpoint.as_directory() as ckpt:
        encoder = load_trained(ckpt).encoder
    with second.checkpoint.as_directory() as ckpt:
        model, loaded = load_training_state(ckpt)
    assert loaded.epochs == 2 and loaded.good_threshold
    probes = probe_inputs_of(encoder)  # the zoo's probe inputs, as the workers set them, saved
    assert dict(probes.named_buffers()).keys() == {f"dense_{w}" for w in (2, 4, 10, 13, 64)} | {"images_1"}
    assert torch.equal(probes.images(1), torch.from_numpy(np.load(folder / "probe_inputs.npz")["1x8x8"]).double())
    metrics = evaluate_retrieval(encoder, labelled_table(graphs, split(models, "test")))
    before, after = refit_metric_head(model, labelled_table(graphs, split(models, "train")),
                                      labelled_table(graphs, split(models, "val")), loaded, steps=500)
    assert after < before  # better on validation than the head as trained
    assert 0.0 <= metrics["p_at_1"] <= 1.0 and 0.0 < metrics["map"] <= 1.0
    assert -1.0 <= metrics["broken_copy_cos"] <= 1.0 + 1e-6 and 0.0 <= metrics["broken_copy_top1"] <= 1.0


def test_adversarial_copy_is_nearby_and_worse(tiny_zoo):
    from pipeline.training.augment import adversarial
    from pipeline.zoo.train import build_model, spec_data

    folder, catalog = tiny_zoo
    for row in [r for r in catalog.to_pylist() if r["family"] in ("mlp", "cnn")][:2]:
        graph = build_graph(open_checkpoint(str(folder / row["path"])))
        copy = adversarial(graph, row, np.random.default_rng(0), epsilon=0.05)
        spec = {**row, "arch": __import__("json").loads(row["arch"])}
        data = spec_data(spec)

        def loss(tensors):
            model = build_model(spec, data.num_inputs, data.num_outputs).eval()
            model.load_state_dict({n: torch.from_numpy(np.array(t)) for n, t in tensors.items()})
            with torch.no_grad():
                return float(data.loss(model(data.x_train), data.y_train))
        relative = max(float(np.abs(copy.tensors[n] - t).max() / (np.abs(t).max() + 1e-12))
                       for n, t in graph.tensors.items())
        assert 0 < relative < 0.2 and loss(copy.tensors) > loss(graph.tensors)
