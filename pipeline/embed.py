"""Embedding a zoo: stored graphs -> embeddings table + faiss index, incrementally, with Ray Data.

Output folder::

    <out>/embeddings/part-<uuid>.parquet   content_id, vector, encoder, encoder_version, fingerprint, wiring
    <out>/index/                           the ModelIndex (see pipeline.index)

An encoder is identified as ``<name>@<sha256 of its state file, 12 hex>``: an index built with one
version refuses vectors of another. ``fingerprint`` and ``wiring`` are the model's
symmetry-invariant weight and wiring fingerprints (:mod:`pipeline.duplicates`), computed in the same
pass for near-duplicate detection.
"""
from __future__ import annotations

import hashlib
import os
import time
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

EMBEDDING_SCHEMA = pa.schema([("content_id", pa.string()), ("vector", pa.list_(pa.float32())),
                              ("encoder", pa.string()), ("encoder_version", pa.string()),
                              ("fingerprint", pa.list_(pa.float32())), ("wiring", pa.list_(pa.float32()))])


def encoder_version(state_path: str, name: str) -> str:
    with open(state_path, "rb") as f:
        return f"{name}@{hashlib.sha256(f.read()).hexdigest()[:12]}"


class Embedder:
    """Ray Data actor holding a trained encoder: graph records -> embedding rows."""

    def __init__(self, state_path: str):
        import torch

        from pipeline.train import load_trained

        torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
        self.encoder, config = load_trained(state_path)
        self.name, self.version = config.encoder, encoder_version(state_path, config.encoder)

    def __call__(self, batch: pa.Table) -> pa.Table:
        from pipeline.duplicates import fingerprint, wiring_fingerprint
        from pipeline.encoders import embed, prepare, probe_inputs_of
        from pipeline.graph.rows import records_to_graphs
        from pipeline.symmetry import canonical_scaling

        graphs = list(records_to_graphs(batch.drop_columns([c for c in batch.column_names if c.startswith("label_")])))
        scalings = [canonical_scaling(g) for g in graphs]  # shared by the encoder's inputs and the fingerprints
        probes = probe_inputs_of(self.encoder)
        z = embed(self.encoder, [prepare(g, scaling=s, probes=probes)
                                 for g, s in zip(graphs, scalings)]).numpy().astype(np.float32)
        return pa.table({"content_id": [g.info["content_id"] for g in graphs], "vector": list(z),
                         "encoder": [self.name] * len(z), "encoder_version": [self.version] * len(z),
                         "fingerprint": [fingerprint(g, s) for g, s in zip(graphs, scalings)],
                         "wiring": [wiring_fingerprint(g) for g in graphs]},
                        schema=EMBEDDING_SCHEMA)


def read_embeddings(out: str, version: str | None = None) -> pa.Table:
    """Every embedding row of an output folder (of one encoder ``version``); columns that parts
    written by an older release lack (fingerprints) read as nulls."""
    folder = os.path.join(out, "embeddings")
    parts = sorted(os.path.join(folder, p) for p in os.listdir(folder) if p.startswith("part-")) \
        if os.path.isdir(folder) else []
    table = pa.concat_tables([_conform(pq.read_table(p)) for p in parts]) if parts \
        else EMBEDDING_SCHEMA.empty_table()
    return table if version is None else table.filter(pc.equal(table.column("encoder_version"), version))


def _conform(part: pa.Table) -> pa.Table:
    columns = [part.column(f.name) if f.name in part.column_names else pa.nulls(part.num_rows, f.type)
               for f in EMBEDDING_SCHEMA]
    return pa.table(columns, schema=EMBEDDING_SCHEMA)


def run_embed(graphs_dir: str, state_path: str, out: str, factory: str = "Flat", num_actors: int | None = None,
              batch_size: int = 64, limit: int | None = None) -> dict:
    """Embed every stored model not embedded yet by this encoder version (at most ``limit`` of them),
    then update the index."""
    import ray
    import ray.data

    from pipeline.dataset import model_dataset, stored_models
    from pipeline.index import ModelIndex
    from pipeline.train import load_trained

    _, config = load_trained(state_path)
    version = encoder_version(state_path, config.encoder)
    done = set(read_embeddings(out, version).column("content_id").to_pylist())
    models = stored_models(graphs_dir)
    todo = models.filter(pc.invert(pc.is_in(models.column("content_id"), pa.array(sorted(done), pa.string()))))
    todo = todo.slice(0, limit) if limit is not None else todo
    os.makedirs(os.path.join(out, "embeddings"), exist_ok=True)
    new, started = 0, time.perf_counter()
    if todo.num_rows:
        actors = num_actors or max(1, int(ray.cluster_resources().get("CPU", 1)))
        ds = model_dataset(graphs_dir, todo).map_batches(
            Embedder, fn_constructor_kwargs={"state_path": os.path.abspath(state_path)}, batch_size=batch_size,
            batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=1)
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            path = os.path.join(out, "embeddings", f"part-{uuid.uuid4().hex[:16]}.parquet")
            pq.write_table(batch, path + ".tmp")
            os.replace(path + ".tmp", path)
            new += batch.num_rows
    seconds = time.perf_counter() - started
    table = read_embeddings(out, version)
    index_dir = os.path.join(out, "index")
    vectors = np.stack(table.column("vector").to_numpy(zero_copy_only=False)) if table.num_rows else None
    index = ModelIndex(config.encoder_kwargs.get("dim", 256), version, factory)
    if vectors is not None:
        index.add(table.column("content_id").to_pylist(), vectors, version)
        index.save(index_dir)
    return {"encoder_version": version, "embedded_now": new, "indexed": len(index), "index": index_dir,
            "embed_seconds": round(seconds, 2)}
