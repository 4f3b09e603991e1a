"""Embedding a zoo: stored graphs -> embeddings table + faiss index, incrementally, with Ray Data
(the actors write the embeddings parts; the index is built from the parts' ids and vectors).

Output folder (a path or URI)::

    <out>/embeddings/part-<uuid>.parquet   EMBEDDING_SCHEMA: content_id, vector, encoder, encoder_version,
                                           fingerprint, wiring, outputs, symmetry, candidates
    <out>/index/                           the ModelIndex (see pipeline.search.index)

Vectors are tied to their encoder's version (:func:`pipeline.encoders.state.encoder_version`).
``fingerprint``, ``wiring`` and ``outputs`` are the model's symmetry-invariant weight and wiring
fingerprints and its outputs at the encoder's probe inputs (empty where it cannot be run),
``symmetry`` the group of its hidden neurons and, where its activation is unknown, ``candidates``:
the embedding and fingerprint under each larger candidate group (see :mod:`pipeline.search.duplicates`),
computed in the same pass for near-duplicate detection.
"""
from __future__ import annotations

import os
import time
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.storage import join, list_parts, make_dirs, resolve, write_parquet

EMBEDDING_SCHEMA = pa.schema([("content_id", pa.string()), ("vector", pa.list_(pa.float32())),
                              ("encoder", pa.string()), ("encoder_version", pa.string()),
                              ("fingerprint", pa.list_(pa.float32())), ("wiring", pa.list_(pa.list_(pa.float32()))),
                              ("outputs", pa.list_(pa.float32())), ("symmetry", pa.string()),
                              ("candidates", pa.list_(pa.struct([("symmetry", pa.string()),
                                                                 ("vector", pa.list_(pa.float32())),
                                                                 ("fingerprint", pa.list_(pa.float32()))])))])


class Embedder:
    """Ray Data actor holding a trained encoder: shards of an ingestion output -> embeddings parts
    written to ``out`` (through :mod:`pipeline.storage`, so any URI), ``batch_size`` models at a
    time. Each row names a shard and the content ids wanted from it; returns the ids embedded. The
    actor reads its shards itself, so every CPU of the pool embeds (a separate read stage would
    hold CPUs of its own)."""

    def __init__(self, state_path: str, graphs_dir: str, out: str, batch_size: int, device: str = "cpu"):
        import torch

        from pipeline.encoders.state import load_trained

        torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
        self.trained = load_trained(state_path)
        self.trained.encoder.to(device)  # embed() runs the encoder where its parameters are
        self.graphs, self.out, self.batch_size = resolve(graphs_dir), resolve(out), batch_size

    def __call__(self, batch: pa.Table) -> pa.Table:
        from pipeline.graph.rows import read_shard

        (fs, root), (out_fs, out_root) = self.graphs, self.out
        done: list[str] = []
        for shard, ids in zip(batch.column("shard").to_pylist(), batch.column("content_ids").to_pylist()):
            wanted = set(ids)
            graphs = [g for g in read_shard(fs, f"{root}/shards/{shard}") if g.info["content_id"] in wanted]
            for start in range(0, len(graphs), self.batch_size):
                rows = embedding_rows(self.trained, graphs[start:start + self.batch_size])
                write_parquet(out_fs, f"{out_root}/embeddings/part-{uuid.uuid4().hex[:16]}.parquet", rows)
                done += rows.column("content_id").to_pylist()
        return pa.table({"content_id": pa.array(done, pa.string())})


def embedding_rows(trained, graphs: list) -> pa.Table:
    """:data:`EMBEDDING_SCHEMA` rows of ``graphs`` (each with ``info["content_id"]``) by a trained
    encoder (:class:`pipeline.encoders.state.TrainedEncoder`), embedded as one batch."""
    from pipeline.encoders import probe_inputs_of
    from pipeline.search.duplicates import model_prints

    prints = model_prints(graphs, trained.encoder, probe_inputs_of(trained.encoder))
    n = len(prints)
    return pa.table({"content_id": [g.info["content_id"] for g in graphs], "vector": [p.vector for p in prints],
                     "encoder": [trained.name] * n, "encoder_version": [trained.version] * n,
                     "fingerprint": [p.fingerprint for p in prints], "wiring": [p.wiring for p in prints],
                     "outputs": [p.outputs for p in prints], "symmetry": [p.symmetry for p in prints],
                     "candidates": [[{"symmetry": group, "vector": vector, "fingerprint": print_}
                                     for group, (vector, print_) in p.candidates.items()] or None for p in prints]},
                    schema=EMBEDDING_SCHEMA)


def read_embeddings(out: str, version: str | None = None) -> pa.Table:
    """Every embedding row of an output folder (of one encoder ``version``)."""
    fs, root = resolve(out)
    parts = sorted(list_parts(fs, f"{root}/embeddings"))  # by name: the same order on every filesystem
    table = pa.concat_tables([_read_part(fs, p) for p in parts]) if parts else EMBEDDING_SCHEMA.empty_table()
    return table if version is None else table.filter(pc.equal(table.column("encoder_version"), version))


def _read_part(fs, path: str) -> pa.Table:
    """One embeddings part as :data:`EMBEDDING_SCHEMA`. Parts written before the wiring came in
    parts hold it as one flat list: read as a single part (their pairs with newer rows differ in
    parts, so are never taken for duplicates; re-embed into a fresh folder to compare them)."""
    table = pq.read_table(path, filesystem=fs)
    wiring = table.schema.field("wiring").type if "wiring" in table.schema.names else None
    if wiring is not None and not pa.types.is_list(wiring.value_type):
        rows = [None if w is None else [w] for w in table.column("wiring").to_pylist()]
        table = table.set_column(table.schema.get_field_index("wiring"), "wiring",
                                 pa.array(rows, EMBEDDING_SCHEMA.field("wiring").type))
    for field in EMBEDDING_SCHEMA:  # columns added since the part was written: null
        if field.name not in table.schema.names:
            table = table.append_column(field, pa.nulls(table.num_rows, field.type))
    return table.select(EMBEDDING_SCHEMA.names).cast(EMBEDDING_SCHEMA)


def embedding_matrix(table: pa.Table) -> np.ndarray:
    """``[rows, dim]`` float32 vectors of an embeddings table."""
    return np.stack(table.column("vector").to_numpy(zero_copy_only=False)).astype(np.float32)


def table_prints(table: pa.Table) -> list:
    """The :class:`~pipeline.search.duplicates.Prints` of each row of an embeddings table (a missing
    fingerprint reads as NaN: never equal to another)."""
    from pipeline.search.duplicates import Prints

    def array(values, missing=()):
        return np.asarray(missing if values is None else values, dtype=np.float32)

    return [Prints(array(r["vector"]), array(r["fingerprint"], [np.nan]),
                   [array(part) for part in r["wiring"]] if r["wiring"] is not None else [array([np.nan])],
                   array(r["outputs"]), r["symmetry"] or "perm",
                   {c["symmetry"]: (array(c["vector"]), array(c["fingerprint"])) for c in r["candidates"] or ()})
            for r in table.select(["vector", "fingerprint", "wiring", "outputs", "symmetry", "candidates"]).to_pylist()]


def run_embed(graphs_dir: str, state_path: str, out: str, factory: str = "Flat", num_actors: int | None = None,
              batch_size: int = 64, limit: int | None = None, use_gpu: bool = False) -> dict:
    """Embed every stored model not embedded yet by this encoder version (at most ``limit`` of them),
    then update the index. Every path may be a URI. Ray must be running. ``use_gpu``: each actor
    takes a GPU and runs the encoder there (the probe pass and the fingerprints stay on its CPU).

    The actors read the shards and write the embeddings parts; the driver gets back content ids
    only, and builds the index part by part from the vectors alone."""
    import ray
    import ray.data

    from pipeline.encoders.state import load_trained
    from pipeline.ingest.store import stored_models

    trained = load_trained(state_path)
    done = set(read_embedding_ids(out, trained.version))
    models = stored_models(graphs_dir)
    todo = models.filter(pc.invert(pc.is_in(models.column("content_id"), pa.array(sorted(done), pa.string()))))
    todo = todo.slice(0, limit) if limit is not None else todo
    make_dirs(join(out, "embeddings"))
    new, started = 0, time.perf_counter()
    if todo.num_rows:
        resource = "GPU" if use_gpu else "CPU"
        actors = num_actors or max(1, int(ray.cluster_resources().get(resource, 1)))
        where = lambda p: p if "://" in p else os.path.abspath(p)  # noqa: E731 -- actors run elsewhere
        by_shard: dict[str, list[str]] = {}
        for cid, shard in zip(todo.column("content_id").to_pylist(), todo.column("shard").to_pylist()):
            by_shard.setdefault(shard, []).append(cid)
        items = [{"shard": shard, "content_ids": ids} for shard, ids in sorted(by_shard.items())]
        ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            Embedder, fn_constructor_kwargs={"state_path": where(state_path), "graphs_dir": where(graphs_dir),
                                             "out": where(out), "batch_size": batch_size,
                                             "device": "cuda" if use_gpu else "cpu"},
            batch_size=1, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=1,
            num_gpus=1 if use_gpu else 0)
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            new += batch.num_rows
    seconds = time.perf_counter() - started
    index = build_index(out, trained.dim, trained.version, factory)
    return {"encoder_version": trained.version, "embedded_now": new, "indexed": len(index),
            "index": join(out, "index"), "embed_seconds": round(seconds, 2)}


def read_embedding_ids(out: str, version: str) -> list[str]:
    """Content ids embedded by encoder ``version`` in an output folder (two columns read)."""
    ids = []
    for _, table in _version_parts(out, version, ["content_id"]):
        ids.extend(table.column("content_id").to_pylist())
    return ids


def stored_vector(out: str, version: str, content_id: str) -> np.ndarray | None:
    """``[1, dim]`` vector of ``content_id`` embedded by ``version`` in an output folder, or ``None``."""
    for _, table in _version_parts(out, version, ["content_id", "vector"]):
        rows = table.filter(pc.equal(table.column("content_id"), content_id))
        if rows.num_rows:
            return embedding_matrix(rows.slice(0, 1))
    return None


def _version_parts(out: str, version: str, columns: list[str]):
    """``(path, table)`` of each embeddings part, reduced to ``columns`` of ``version``'s rows."""
    fs, root = resolve(out)
    for path in sorted(list_parts(fs, f"{root}/embeddings")):
        table = pq.read_table(path, filesystem=fs, columns=sorted({*columns, "encoder_version"}))
        yield path, table.filter(pc.equal(table.column("encoder_version"), version)).select(columns)


def build_index(out: str, dim: int, version: str, factory: str = "Flat"):
    """The :class:`~pipeline.search.index.ModelIndex` of every ``version`` embedding in ``out``,
    saved to ``<out>/index`` (when there is any); read part by part, vectors and ids only."""
    from pipeline.search.index import ModelIndex

    index = ModelIndex(dim, version, factory)
    parts = (table for _, table in _version_parts(out, version, ["content_id", "vector"]))
    if factory != "Flat":  # a trained index takes its training vectors at once
        tables = list(parts)
        parts = [pa.concat_tables(tables)] if tables else []
    for table in parts:
        if table.num_rows:
            index.add(table.column("content_id").to_pylist(), embedding_matrix(table), version)
    if len(index):
        index.save(join(out, "index"))
    return index
