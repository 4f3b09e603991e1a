"""Adding one checkpoint to an indexed zoo in place, without a Ray job (the server's ``POST /models``).

The model goes where ``weightzoo index`` would have put it, in three commits, each of which a retry
after a crash resumes from:

1. its graph, as a shard and a records part of its own in the ingestion folder (the records part
   commits the shard, see :mod:`pipeline.ingest.job`), then the manifest rebuilt;
2. its embedding row, as an embeddings part (:func:`pipeline.search.embed.embedding_rows`);
3. the index with its vector added, ``index.json`` written last (readers reload on its change).

A content id already indexed is not added again, so adding is idempotent. One writer per folder at a
time: a server's single writer replica, or one ``weightzoo index`` run, not both.
"""
from __future__ import annotations

import dataclasses
import time
import uuid

from pipeline.storage import exists, join, make_dirs, resolve, write_parquet


def add_checkpoint(path: str, out: str, graphs: str, trained, source: str | None = None,
                   hints: dict | None = None, precision: str = "fp32") -> dict:
    """Add the checkpoint at ``path`` to the index in ``out`` (``weightzoo index``'s output; its
    ingestion folder ``graphs``), embedded by ``trained`` (a
    :class:`~pipeline.encoders.state.TrainedEncoder`, the index's encoder). ``source``: the path the
    model is recorded under (default: ``path``; ``{content_id}`` in it is replaced by the model's); ``hints``: checked command-line hints
    (:mod:`pipeline.graph.hints`).

    Returns ``{"content_id", "added"}`` (``added`` false: it was indexed already) plus the model's
    ``family`` and ``num_params``. Raises :class:`~pipeline.checkpoint.CheckpointError` on bad
    input and :class:`~pipeline.search.index.EncoderMismatch` when ``trained`` is not the index's
    encoder; either way nothing is written."""
    from pipeline.checkpoint import open_checkpoint
    from pipeline.checkpoint.discover import CheckpointRef
    from pipeline.graph import build_graph
    from pipeline.graph.rows import check_storable
    from pipeline.ingest.job import commit_records, consolidate, store_converted
    from pipeline.ingest.store import stored_models
    from pipeline.search.embed import embedding_matrix, embedding_rows, stored_vector
    from pipeline.search.index import EncoderMismatch, ModelIndex

    started = time.perf_counter()
    folder = join(out, "index")
    index = ModelIndex.load(folder) if exists(join(folder, "index.json")) else ModelIndex(trained.dim, trained.version)
    if index.encoder_version != trained.version:
        raise EncoderMismatch(f"the index holds {index.encoder_version!r} embeddings; the encoder is {trained.version!r}")
    ckpt = open_checkpoint(path)
    cid = ckpt.content_id()
    ckpt = dataclasses.replace(ckpt, path=(source or path).replace("{content_id}", cid))
    graph = build_graph(ckpt, cid, None, hints or {})
    summary = {"content_id": cid, "family": graph.family, "num_params": graph.num_params}
    if cid in index:
        return {**summary, "added": False}

    fs, root = resolve(graphs)
    stored = exists(join(graphs, "manifest.parquet")) and cid in set(stored_models(graphs).column("content_id").to_pylist())
    if not stored:
        check_storable(graph, precision)
        batch = uuid.uuid4().hex[:16]
        for sub in ("shards", "records"):
            make_dirs(join(graphs, sub))
        ref = CheckpointRef(ckpt.path, ckpt.file_bytes, time.time_ns())
        records = store_converted(fs, root, f"part-{batch}-0", [(ref, graph, started)], precision)
        commit_records(fs, root, batch, list(records.values()))
        consolidate(fs, root)

    vector = stored_vector(out, trained.version, cid)
    if vector is None:
        rows = embedding_rows(trained, [graph])
        make_dirs(join(out, "embeddings"))
        out_fs, out_root = resolve(out)
        write_parquet(out_fs, f"{out_root}/embeddings/part-{uuid.uuid4().hex[:16]}.parquet", rows)
        vector = embedding_matrix(rows)
    index.add([cid], vector, trained.version)
    index.save(folder)
    return {**summary, "added": True}
