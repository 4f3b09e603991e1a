"""Labelled models for training and evaluation: the ingestion manifest joined with the zoo catalog,
split by seed or by hyperparameter setting. Read them as model rows with
:func:`labelled_table` / :func:`labelled_dataset` (label columns: :data:`LABEL_COLUMNS`)."""
from __future__ import annotations

import posixpath
import zlib

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.ingest.store import model_dataset, model_table, read_manifest
from pipeline.storage import read_parquet

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
    manifest = read_manifest(graphs_dir).to_pylist()
    catalog = read_parquet(catalog_path).to_pylist()
    by_name = {posixpath.basename(r["source_path"]): r for r in manifest}
    rows = []
    for c in catalog:
        m = by_name.get(posixpath.basename(c["path"]))
        if m is None or c.get("duplicate_of"):
            continue
        rows.append({"content_id": m["content_id"], "shard": m["shard"], **{k: c.get(k) for k in LABEL_COLUMNS},
                     "split": split_of(c[split_by])})
    return pa.Table.from_pylist(rows)


def split(models: pa.Table, name: str) -> pa.Table:
    """The rows of ``models`` in split ``name`` (train, val or test)."""
    return models.filter(pc.equal(models.column("split"), name))


def labelled_dataset(graphs_dir: str, models: pa.Table):
    """A Ray Data dataset of the :func:`labelled_models` rows ``models``, with their label columns."""
    return model_dataset(graphs_dir, models, LABEL_COLUMNS)


def labelled_table(graphs_dir: str, models: pa.Table) -> pa.Table:
    """All of :func:`labelled_dataset` as one Arrow table."""
    return model_table(graphs_dir, models, LABEL_COLUMNS)
