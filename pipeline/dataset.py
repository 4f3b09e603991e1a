"""Labelled graphs for training and evaluation: shards joined with the zoo catalog, split by seed or
by hyperparameter setting, as a Ray Data dataset of self-contained model rows."""
from __future__ import annotations

import posixpath
import zlib

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.checkpoint.fs import resolve
from pipeline.graph.rows import graph_records, read_shard

LABEL_COLUMNS = ["model_id", "task", "dataset", "family", "activation", "seed", "hparams_key", "metric_name",
                 "test_metric", "arch", "dropout", "image_index"]
SPLITS = {"train": 0.7, "val": 0.15, "test": 0.15}


def split_of(key: str) -> str:
    """Stable split of a seed or hyperparameter setting: the same key always lands in the same split."""
    u = zlib.crc32(str(key).encode()) / 2**32
    return "train" if u < SPLITS["train"] else "val" if u < SPLITS["train"] + SPLITS["val"] else "test"


def labelled_models(graphs_dir: str, catalog_path: str, split_by: str = "seed") -> pa.Table:
    """One row per stored model of the catalog: content_id, shard, the label columns, ``split``.

    Catalog rows join the ingestion manifest on the checkpoint's file name. ``split_by``: ``seed``
    (models never seen in training) or ``hparams_key`` (hyperparameter settings never seen). Planted
    near-duplicate copies (``duplicate_of`` set) are left out: they are for near-duplicate detection,
    and a copy beside its parent would make retrieval trivially easy."""
    fs, root = resolve(graphs_dir)
    manifest = pq.read_table(f"{root}/manifest.parquet", filesystem=fs).to_pylist()
    cfs, catalog_file = resolve(catalog_path)
    catalog = pq.read_table(catalog_file, filesystem=cfs).to_pylist()
    by_name = {posixpath.basename(r["source_path"]): r for r in manifest}
    rows = []
    for c in catalog:
        m = by_name.get(posixpath.basename(c["path"]))
        if m is None or c.get("duplicate_of"):
            continue
        rows.append({"content_id": m["content_id"], "shard": m["shard"], **{k: c.get(k) for k in LABEL_COLUMNS},
                     "split": split_of(c[split_by])})
    return pa.Table.from_pylist(rows)


def _read_shards(batch: pa.Table, graphs_dir: str, labels: dict[str, dict]) -> pa.Table:
    """Ray Data transform: shard names -> model rows (graph records plus ``label_*`` columns)."""
    fs, root = resolve(graphs_dir)
    tables = []
    for shard in batch.column("shard").to_pylist():
        graphs = [g for g in read_shard(fs, f"{root}/shards/{shard}") if g.info["content_id"] in labels]
        if graphs:
            records = graph_records(graphs)
            for column in (c for c in LABEL_COLUMNS if c in labels[graphs[0].info["content_id"]]):
                records = records.append_column(
                    f"label_{column}", pa.array([labels[g.info["content_id"]][column] for g in graphs]))
            tables.append(records)
    return pa.concat_tables(tables)


def stored_models(graphs_dir: str) -> pa.Table:
    """``content_id`` and ``shard`` of every model stored in an ingestion output (no labels)."""
    fs, root = resolve(graphs_dir)
    manifest = pq.read_table(f"{root}/manifest.parquet", filesystem=fs, columns=["content_id", "shard", "status"])
    return manifest.filter(pc.equal(manifest.column("status"), "converted")).select(["content_id", "shard"])


def model_dataset(graphs_dir: str, models: pa.Table):
    """A Ray Data dataset of the ``models`` rows (from :func:`labelled_models` or :func:`stored_models`):
    graph records with ``label_*`` columns for the labels present, read shard by shard; each row is
    self-contained."""
    import ray.data

    labels = {r["content_id"]: r for r in models.to_pylist()}
    shards = sorted(set(models.column("shard").to_pylist()))
    return (ray.data.from_items([{"shard": s} for s in shards], override_num_blocks=max(1, len(shards)))
            .map_batches(_read_shards, fn_kwargs={"graphs_dir": graphs_dir, "labels": labels}, batch_size=1,
                         batch_format="pyarrow"))


def split(models: pa.Table, name: str) -> pa.Table:
    """The rows of ``models`` in split ``name`` (train, val or test)."""
    return models.filter(pc.equal(models.column("split"), name))


def model_table(graphs_dir: str, models: pa.Table) -> pa.Table:
    """All of :func:`model_dataset` as one Arrow table (for evaluation and fitting baselines)."""
    import ray

    refs = model_dataset(graphs_dir, models).to_arrow_refs()
    return pa.concat_tables(ray.get(refs))
