"""embed_zoo's library path on the tiny zoo: Ray Data actors embed every stored model once, the
index finds each model first by its own vector, and re-running embeds nothing."""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from pipeline.train import EncoderWithHead, TrainConfig


def test_embed_tiny_zoo_and_query(ray_session, tiny_zoo, tmp_path):
    from pipeline.embed import read_embeddings, run_embed
    from pipeline.encoders import build_encoder
    from pipeline.index import ModelIndex
    from pipeline.ingest import IngestConfig, run_ingest

    folder, catalog = tiny_zoo
    graphs = str(tmp_path / "graphs")
    run_ingest(IngestConfig([str(folder / "models")], graphs))
    config = TrainConfig(encoder="scale_gmn", encoder_kwargs={"dim": 32, "hidden": 32, "layers": 2})
    torch.manual_seed(0)
    model = EncoderWithHead(build_encoder("scale_gmn", **config.encoder_kwargs), 32)
    torch.save({"model": model.state_dict(), "config": dataclasses.asdict(config)}, tmp_path / "state.pt")

    out = str(tmp_path / "embedded")
    first = run_embed(graphs, str(tmp_path / "state.pt"), out, num_actors=1)
    assert (first["embedded_now"], first["indexed"]) == (catalog.num_rows, catalog.num_rows)
    assert first["encoder_version"].startswith("scale_gmn@")
    again = run_embed(graphs, str(tmp_path / "state.pt"), out, num_actors=1)
    assert (again["embedded_now"], again["indexed"]) == (0, catalog.num_rows)

    table = read_embeddings(out)
    assert table.num_rows == catalog.num_rows and len(set(table.column("content_id").to_pylist())) == table.num_rows
    index = ModelIndex.load(first["index"])
    vectors = np.stack(table.column("vector").to_numpy(zero_copy_only=False))
    hits = index.search(vectors, 5, first["encoder_version"])
    ids = table.column("content_id").to_pylist()
    assert np.mean([h[0][0] == cid for h, cid in zip(hits, ids)]) >= 0.95  # exact twins may tie
    assert all(abs(h[0][1] - 1.0) < 1e-4 for h in hits)
