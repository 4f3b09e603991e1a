"""Reading an ingestion output (see :mod:`pipeline.ingest.job` for its layout): the manifest, the
stored models, and Ray Data datasets of self-contained model rows read shard by shard.

A model row is a graph record (:func:`pipeline.graph.rows.graph_records`: the graph's description
and its tensors' bytes) plus, optionally, one ``label_<name>`` column per label joined to it (task,
test metric, ...; see :mod:`pipeline.training.dataset`). The helpers at the end are the one place
that knows the ``label_`` prefix.
"""
from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.graph.rows import graph_records, read_shard
from pipeline.storage import join, read_parquet, resolve

LABEL_PREFIX = "label_"


def read_manifest(graphs_dir: str, columns: list[str] | None = None) -> pa.Table:
    """The ingestion output's ``manifest.parquet`` (converted and duplicate records)."""
    return read_parquet(join(graphs_dir, "manifest.parquet"), columns=columns)


def stored_models(graphs_dir: str) -> pa.Table:
    """``content_id`` and ``shard`` of every model stored in an ingestion output (no labels)."""
    manifest = read_manifest(graphs_dir, ["content_id", "shard", "status"])
    return manifest.filter(pc.equal(manifest.column("status"), "converted")).select(["content_id", "shard"])


def _read_shards(batch: pa.Table, graphs_dir: str, labels: dict[str, dict], label_names: list[str]) -> pa.Table:
    """Ray Data transform: shard names -> model rows (graph records plus label columns)."""
    fs, root = resolve(graphs_dir)
    tables = []
    for shard in batch.column("shard").to_pylist():
        graphs = [g for g in read_shard(fs, f"{root}/shards/{shard}") if g.info["content_id"] in labels]
        if graphs:
            records = graph_records(graphs)
            for name in label_names:
                records = records.append_column(label_column(name),
                                                pa.array([labels[g.info["content_id"]][name] for g in graphs]))
            tables.append(records)
    return pa.concat_tables(tables)


def model_dataset(graphs_dir: str, models: pa.Table, label_names: list[str] = ()):
    """A Ray Data dataset of the ``models`` rows (``content_id``, ``shard``, any other columns):
    graph records with a label column for each of ``label_names`` present in ``models``, read
    shard by shard; each row is self-contained."""
    import ray.data

    labels = {r["content_id"]: r for r in models.to_pylist()}
    shards = sorted(set(models.column("shard").to_pylist()))
    present = [name for name in label_names if name in models.column_names]
    return (ray.data.from_items([{"shard": s} for s in shards], override_num_blocks=max(1, len(shards)))
            .map_batches(_read_shards, fn_kwargs={"graphs_dir": graphs_dir, "labels": labels, "label_names": present},
                         batch_size=1, batch_format="pyarrow"))


def model_table(graphs_dir: str, models: pa.Table, label_names: list[str] = ()) -> pa.Table:
    """All of :func:`model_dataset` as one Arrow table (for evaluation and fitting baselines)."""
    import ray

    return pa.concat_tables(ray.get(model_dataset(graphs_dir, models, label_names).to_arrow_refs()))


# --- label columns ---------------------------------------------------------------------------------

def label_column(name: str) -> str:
    """The column of model rows holding label ``name``."""
    return LABEL_PREFIX + name


def labels(table: pa.Table, name: str) -> list:
    """Label ``name`` of every model row."""
    return table.column(label_column(name)).to_pylist()


def label_rows(table: pa.Table, names: list[str] | None = None) -> list[dict]:
    """Each model row's labels (``names``, default all) as a dict keyed by label name."""
    names = [c[len(LABEL_PREFIX):] for c in table.column_names if c.startswith(LABEL_PREFIX)] \
        if names is None else names
    columns = {name: labels(table, name) for name in names}
    return [{name: values[i] for name, values in columns.items()} for i in range(table.num_rows)]


def without_labels(table: pa.Table) -> pa.Table:
    """Model rows reduced to their graph records."""
    return table.drop_columns([c for c in table.column_names if c.startswith(LABEL_PREFIX)])
