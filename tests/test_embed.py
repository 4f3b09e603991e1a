"""embed_zoo and queries on the tiny zoo: Ray Data actors embed every stored model once, the index
finds each model first by its own vector, re-running embeds nothing; queries by id and by file
honour filters and the encoder version; near-duplicate groups are exactly the planted copies."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import small_encoder_state
from models import sklearn_mlp
from pipeline.commands import query


def test_embed_tiny_zoo_is_incremental_and_self_retrieving(indexed):
    from pipeline.search import ModelIndex, read_embeddings, run_embed

    first, count = indexed["first"], len(indexed["rows"])
    assert (first["embedded_now"], first["indexed"]) == (count, count)
    assert first["encoder_version"].startswith("scale_gmn@")
    again = run_embed(indexed["graphs"], indexed["state"], indexed["out"], num_actors=1)
    assert (again["embedded_now"], again["indexed"]) == (0, count)

    table = read_embeddings(indexed["out"])
    assert table.num_rows == count and len(set(table.column("content_id").to_pylist())) == table.num_rows
    index = ModelIndex.load(first["index"])
    vectors = np.stack(table.column("vector").to_numpy(zero_copy_only=False))
    hits = index.search(vectors, 5, first["encoder_version"])
    ids = table.column("content_id").to_pylist()
    # each model is its own nearest neighbour (a planted exact-symmetry copy ties with its parent)
    assert all(cid in [c for c, score in h if score > h[0][1] - 1e-5] for h, cid in zip(hits, ids))
    assert all(abs(h[0][1] - 1.0) < 1e-4 for h in hits)


def test_query_by_id_with_filters(indexed):
    from pipeline.search import Filters, ZooSearch

    search = ZooSearch(indexed["out"], indexed["graphs"], indexed["catalog"])
    query = next(r["model_id"] for r in indexed["rows"] if r["family"] == "mlp" and not r["duplicate_of"])
    results = search.by_id(query, 5)
    assert len(results) == 5 and query not in [r["model_id"] for r in results]
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True) and all(r["task"] for r in results)
    cnns = search.by_id(query, 4, Filters(family="cnn", max_params=10_000))
    assert len(cnns) == 4 and all(r["family"] == "cnn" and r["num_params"] <= 10_000 for r in cnns)
    assert search.by_id(query, 3, Filters(min_params=10**9)) == []
    with pytest.raises(KeyError, match="no indexed model"):
        search.by_id("no-such-model", 3)


def test_query_by_file_finds_the_parent_of_a_transformed_copy(indexed):
    from pipeline.checkpoint import CheckpointError, open_checkpoint, save_checkpoint
    from pipeline.graph import build_graph
    from pipeline.search import EncoderMismatch, ZooSearch
    from pipeline.testing import random_transform

    row = next(r for r in indexed["rows"] if r["family"] == "cnn" and not r["duplicate_of"])
    ckpt = open_checkpoint(str(indexed["zoo"] / row["path"]))
    graph = build_graph(ckpt)
    path = str(indexed["tmp"] / "transformed.safetensors")
    save_checkpoint(random_transform(graph, np.random.default_rng(3)).tensors, path, ckpt.metadata)

    search = ZooSearch(indexed["out"], indexed["graphs"], indexed["catalog"], indexed["state"])
    results = search.by_file(path, len(indexed["rows"]))
    parent = next(r for r in results if r["model_id"] == row["model_id"])
    assert parent["score"] > 1 - 1e-5 and parent["score"] >= results[0]["score"] - 1e-6  # ties: planted twins

    corrupt = indexed["tmp"] / "corrupt.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CheckpointError, match="corrupt.safetensors"):
        search.by_file(str(corrupt), 3)
    other = ZooSearch(indexed["out"], indexed["graphs"], encoder_state=small_encoder_state(indexed["tmp"] / "other.pt", 1))
    with pytest.raises(EncoderMismatch):
        other.by_file(path, 3)


def test_near_duplicates_are_the_planted_copies(indexed):
    from pipeline.search import ZooSearch

    groups = ZooSearch(indexed["out"], indexed["graphs"], indexed["catalog"]).near_duplicates()
    found = sorted(tuple(sorted(m["model_id"] for m in g["models"])) for g in groups)
    planted = sorted(tuple(sorted((r["model_id"], r["duplicate_of"]))) for r in indexed["rows"] if r["duplicate_of"])
    assert found == planted


def test_query_cli(indexed, capsys):
    model = indexed["rows"][0]["model_id"]
    results = query.main(["--index", indexed["out"], "--graphs", indexed["graphs"], "--catalog", indexed["catalog"],
                        "--id", model, "--k", "3", "--family", "mlp"])
    assert len(results) == 3 and all(r["family"] == "mlp" for r in results)
    printed = capsys.readouterr().out
    assert "score" in printed and all(r["model_id"] in printed for r in results)
    shell = subprocess.run([str(Path(sys.executable).with_name("weightzoo")), "search", model, "--index", indexed["out"],
                            "--graphs", indexed["graphs"], "--k", "3"], capture_output=True, text=True, timeout=120)
    assert shell.returncode == 0 and results[0]["model_id"] in shell.stdout  # the installed command, exit 0
    with pytest.raises(SystemExit):  # a filter value no model has: the error lists those that exist
        query.main(["--index", indexed["out"], "--graphs", indexed["graphs"], "--id", model, "--family", "mpl"])
    assert "unknown family 'mpl'" in capsys.readouterr().err



def test_embeddings_written_before_the_wiring_came_in_parts_still_read(tmp_path):
    """A part of the earlier layout (wiring one flat list, no candidates column) reads as one
    wiring part; its pairs with newer rows are never taken for duplicates."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.search.duplicates import wiring_distance
    from pipeline.search.embed import read_embeddings, table_prints

    old = pa.table({"content_id": ["a"], "vector": [[1.0, 0.0]], "encoder": ["scale_gmn"],
                    "encoder_version": ["scale_gmn@x"], "fingerprint": [[1.0]], "wiring": [[0.5, 0.25]],
                    "outputs": [[]], "symmetry": ["perm"]},
                   schema=pa.schema([(n, t) for n, t in (("content_id", pa.string()), ("vector", pa.list_(pa.float32())),
                                     ("encoder", pa.string()), ("encoder_version", pa.string()),
                                     ("fingerprint", pa.list_(pa.float32())), ("wiring", pa.list_(pa.float32())),
                                     ("outputs", pa.list_(pa.float32())), ("symmetry", pa.string()))]))
    (tmp_path / "embeddings").mkdir()
    pq.write_table(old, tmp_path / "embeddings" / "part-old.parquet")
    table = read_embeddings(str(tmp_path), "scale_gmn@x")
    (prints,) = table_prints(table)
    assert [p.tolist() for p in prints.wiring] == [[0.5, 0.25]] and prints.candidates == {}
    assert wiring_distance(prints.wiring, [np.array([0.5, 0.25]), np.array([1.0])]) == float("inf")


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_any_folder_is_indexed_and_searched_with_the_shipped_encoder(tiny_zoo, tmp_path, capsys):
    """No training, no labels: ``weightzoo index <folder>`` on models nobody here made (scikit-learn
    MLPs as bare state dicts) beside a few zoo models, then ``weightzoo search <file>``: a permuted
    and rescaled copy of one MLP finds that MLP first, at cosine 1."""
    import shutil

    import torch

    from pipeline.checkpoint import open_checkpoint, save_checkpoint
    from pipeline.commands import embed_zoo
    from pipeline.encoders.state import DEFAULT_ENCODER, encoder_version
    from pipeline.graph import build_graph
    from pipeline.testing import random_transform

    zoo, catalog = tiny_zoo
    mine = tmp_path / "mine"
    mine.mkdir()
    for row in [r for r in catalog.to_pylist() if not r["duplicate_of"]][::6]:
        shutil.copy(zoo / row["path"], mine)
    for seed in range(3):
        torch.save(sklearn_mlp(seed, max_iter=40)[1], mine / f"sklearn-{seed}.pt")
    out = str(tmp_path / "index")
    summary = embed_zoo.main([str(mine), "--out", out, "--activation", "relu"])
    assert summary["encoder_version"] == encoder_version(DEFAULT_ENCODER, "scale_gmn")
    graph = build_graph(open_checkpoint(str(mine / "sklearn-1.pt")), command_line={"activation": "relu"})
    save_checkpoint(random_transform(graph, np.random.default_rng(3)).tensors, str(tmp_path / "copy.safetensors"),
                    {"activation": "relu"})
    capsys.readouterr()
    results = query.main([str(tmp_path / "copy.safetensors"), "--index", out, "--k", "3"])
    assert results[0]["file"] == "sklearn-1.pt" and results[0]["score"] > 1 - 1e-5
    assert all(r["score"] < 1 - 1e-4 for r in results[1:])
    assert "sklearn-1" in capsys.readouterr().out


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_a_checkpoint_added_in_place_is_indexed_once(tiny_zoo, tmp_path):
    """``add_checkpoint`` (what ``POST /models`` runs): a scikit-learn MLP is found first by itself;
    adding it again, or under another name, changes nothing; a model already ingested but not
    embedded (a crash between the steps) is embedded without being stored again; ``weightzoo index``
    run afterwards has nothing left to do; a corrupt file or another encoder writes nothing."""
    import shutil

    import torch

    from pipeline.checkpoint import CheckpointError
    from pipeline.commands import embed_zoo
    from pipeline.encoders.state import DEFAULT_ENCODER, load_trained
    from pipeline.ingest import IngestConfig, run_ingest
    from pipeline.search import EncoderMismatch, ZooSearch, add_checkpoint, read_embeddings

    zoo, catalog = tiny_zoo
    mine = tmp_path / "mine"
    mine.mkdir()
    for row in [r for r in catalog.to_pylist() if not r["duplicate_of"]][::8]:
        shutil.copy(zoo / row["path"], mine)
    out, graphs = str(tmp_path / "index"), str(tmp_path / "index" / "graphs")
    first = embed_zoo.main([str(mine), "--out", out])
    trained = load_trained(DEFAULT_ENCODER)
    torch.save(sklearn_mlp(7, max_iter=20)[1], tmp_path / "sk.pt")

    added = add_checkpoint(str(tmp_path / "sk.pt"), out, graphs, trained, hints={"activation": "relu"})
    assert added["added"] and added["family"] == "mlp"
    search = ZooSearch(out, graphs, encoder_state=DEFAULT_ENCODER)
    assert search.meta[added["content_id"]]["file"] == "sk.pt" and len(search.index) == first["indexed"] + 1
    best = search.by_file(str(tmp_path / "sk.pt"), 1, hints={"activation": "relu"}, sidecar=False)[0]
    assert best["content_id"] == added["content_id"] and best["score"] > 1 - 1e-5
    shutil.copy(tmp_path / "sk.pt", tmp_path / "again.pt")
    assert not add_checkpoint(str(tmp_path / "again.pt"), out, graphs, trained, hints={"activation": "relu"})["added"]
    table = read_embeddings(out, trained.version)
    assert table.column("content_id").to_pylist().count(added["content_id"]) == 1

    torch.save(sklearn_mlp(8, max_iter=20)[1], mine / "ingested-only.pt")  # stored, never embedded
    run_ingest(IngestConfig([str(mine)], graphs))
    shards = sorted(os.listdir(os.path.join(graphs, "shards")))
    resumed = add_checkpoint(str(mine / "ingested-only.pt"), out, graphs, trained)
    assert resumed["added"] and sorted(os.listdir(os.path.join(graphs, "shards"))) == shards
    assert embed_zoo.main(["--out", out])["embedded_now"] == 0
    assert len(ZooSearch(out, graphs).index) == first["indexed"] + 2

    before = {name: (tmp_path / "index" / "index" / name).read_bytes() for name in os.listdir(os.path.join(out, "index"))}
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{oops")
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        add_checkpoint(str(tmp_path / "bad.safetensors"), out, graphs, trained)
    other = load_trained(small_encoder_state(tmp_path / "other.pt", 1))
    torch.save(sklearn_mlp(9, max_iter=20)[1], tmp_path / "sk9.pt")
    with pytest.raises(EncoderMismatch):
        add_checkpoint(str(tmp_path / "sk9.pt"), out, graphs, other)
    assert {name: (tmp_path / "index" / "index" / name).read_bytes() for name in os.listdir(os.path.join(out, "index"))} == before
