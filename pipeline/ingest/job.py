"""Ray Data ingestion: checkpoints -> weight-graph Parquet shards, a manifest and an errors table.

Output layout (any pyarrow filesystem: a local folder, ``s3://...``)::

    <out>/shards/part-<batch>-<k>.{graphs,weights}.parquet
                                            graphs, one per content id, and their weights (a shard:
                                            see pipeline.graph.schema)
    <out>/records/part-<batch>.parquet      one row per input checkpoint (RECORD_SCHEMA); written
                                            after the batch's shards, so it is the batch's commit
    <out>/manifest.parquet                  converted and duplicate records (rebuilt every run)
    <out>/errors.parquet                    failed records, with the error's kind and reason

Runs are idempotent and restartable: checkpoints whose (path, size, mtime) already has a record are
skipped; a content id already stored is recorded as a ``duplicate`` and not stored again (a
:class:`ContentRegistry` actor arbitrates between concurrent converters); shards left by a batch that
never committed are deleted at start-up, and checkpoints whose committed shard is gone are converted
again (``redone_lost``). One run writes an output at a time: a killed run's converter actors must
have stopped before the next run starts.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray

from pipeline.checkpoint.discover import CheckpointRef, discover
from pipeline.checkpoint.dtypes import STORED_PRECISIONS, dtype_name
from pipeline.checkpoint.errors import CheckpointError
from pipeline.checkpoint.adapter import open_model
from pipeline.graph.builders import build_graph
from pipeline.graph.hints import Sidecars
from pipeline.graph.rows import check_storable, write_shard
from pipeline.storage import TMP_PREFIX, list_parts, resolve, write_parquet

RECORD_SCHEMA = pa.schema([
    ("source_path", pa.string()), ("file_size", pa.int64()), ("mtime_ns", pa.int64()),
    ("status", pa.string()),  # converted | duplicate | error
    ("content_id", pa.string()), ("family", pa.string()), ("graph_mode", pa.string()),
    ("num_params", pa.int64()), ("source_dtype", pa.string()), ("stored_dtype", pa.string()),
    ("shard", pa.string()), ("error_kind", pa.string()), ("error", pa.string()), ("seconds", pa.float64()),
    ("activation", pa.string()), ("hints", pa.string()),  # JSON: key -> [value, source]
    ("fallback", pa.string()),  # why a recognized family fell back to a per-layer graph
    ("base", pa.string()),  # a PEFT adapter's declared base (its source path), which it was merged into
])
SHARD_BYTES = 256 * 1024 * 1024   # a shard is written once its checkpoints reach this size
SHARD_MODELS = 256                # ... or this many models: jobs that read shards run one task per shard
BATCH_BYTES = 64 * 1024 * 1024    # an automatic batch holds about this many checkpoint bytes ...
MAX_BATCH = 4096                  # ... and at most this many checkpoints
BATCHES_PER_ACTOR = 4             # ... and there are at least this many batches per actor


def batch_size_for(sizes: list[int], actors: int) -> int:
    """Checkpoints per batch when none is set: many small files per task (each batch costs a task,
    a records part and a shard write, whatever its size), a few large ones, and enough batches to
    keep every actor busy to the end."""
    if not sizes:
        return 1
    by_bytes = BATCH_BYTES // max(1, sum(sizes) // len(sizes))
    return max(1, min(MAX_BATCH, by_bytes, -(-len(sizes) // (BATCHES_PER_ACTOR * actors))))


@dataclass
class IngestConfig:
    inputs: list[str]
    output: str
    precision: str = "fp32"      # stored precision of floating weights: fp32 | fp16 | bf16
    batch_size: int | None = None  # checkpoints per Ray Data batch and records part (None: batch_size_for)
    num_actors: int | None = None
    check_finite: bool = True
    hints: dict = field(default_factory=dict)  # command-line hints (pipeline.graph.hints), checked


@ray.remote(num_cpus=0)
class ContentRegistry:
    """Which content ids are stored (or being stored): the first claim of an id wins."""

    def __init__(self, known: list[str]):
        self.known = set(known)

    def claim(self, content_ids: list[str]) -> list[bool]:
        won = []
        for cid in content_ids:
            won.append(cid not in self.known)
            self.known.add(cid)
        return won

    def release(self, content_ids: list[str]) -> None:
        self.known.difference_update(content_ids)


class GraphConverter:
    """Ray Data actor: a batch of checkpoint refs -> shard files + a records part; returns the records."""

    def __init__(self, output: str, precision: str, check_finite: bool, registry, hints: dict):
        self.fs, self.root = resolve(output)
        self.precision, self.check_finite, self.registry = precision, check_finite, registry
        self.hints, self.sidecars = hints, Sidecars()

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        batch_id = uuid.uuid4().hex[:16]
        refs = [CheckpointRef(u, int(s), int(m)) for u, s, m in zip(batch["uri"], batch["size"], batch["mtime_ns"])]
        records: dict[str, dict] = {}
        opened = []
        for ref in refs:
            started = time.perf_counter()
            try:
                sidecar = self.sidecars.hints_for(ref.uri)
                ckpt = open_model(ref.uri, check_finite=self.check_finite)
                opened.append((ref, ckpt, ckpt.content_id(), sidecar, started))
            except Exception as exc:  # noqa: BLE001 -- every failure is recorded, none stops the job
                records[ref.uri] = _error_record(ref, exc, started)
        won = ray.get(self.registry.claim.remote([cid for _, _, cid, _, _ in opened])) if opened else []

        pending, pending_bytes, shard_index = [], 0, 0
        opened.reverse()  # popped in input order, so each checkpoint's memory map is released when done
        for mine in won:
            ref, ckpt, cid, sidecar, started = opened.pop()
            if not mine:
                records[ref.uri] = _record(ref, "duplicate", started, content_id=cid, num_params=ckpt.num_params,
                                           source_dtype=ckpt.dtype)
                continue
            try:
                graph = build_graph(ckpt, cid, sidecar, self.hints)
                graph.info["base"] = ckpt.base
                check_storable(graph, self.precision)
            except Exception as exc:  # noqa: BLE001
                self.registry.release.remote([cid])
                records[ref.uri] = _error_record(ref, exc, started)
                continue
            pending.append((ref, graph, started))
            pending_bytes += ckpt.file_bytes
            if pending_bytes >= SHARD_BYTES or len(pending) >= SHARD_MODELS:
                self._flush(pending, f"part-{batch_id}-{shard_index}", records)
                pending, pending_bytes, shard_index = [], 0, shard_index + 1
        if pending:
            self._flush(pending, f"part-{batch_id}-{shard_index}", records)
        return commit_records(self.fs, self.root, batch_id, [records[r.uri] for r in refs])

    def _flush(self, pending, shard: str, records: dict) -> None:
        records.update(store_converted(self.fs, self.root, shard, pending, self.precision))
        pending.clear()


def store_converted(fs: pafs.FileSystem, root: str, shard: str, pending: list, precision: str) -> dict[str, dict]:
    """Write the graphs of ``pending`` (``(ref, graph, started)``, each checked by
    :func:`check_storable`) as shard ``shard``; returns their ``converted`` records by source path
    (a records part holding them commits the shard)."""
    write_shard(fs, f"{root}/shards/{shard}", [g for _, g, _ in pending], precision)
    stored = dtype_name(STORED_PRECISIONS[precision])
    return {ref.uri: _record(ref, "converted", started, content_id=graph.info["content_id"], family=graph.family,
                             graph_mode=graph.mode, num_params=graph.num_params,
                             source_dtype=graph.info["source_dtype"], shard=shard, stored_dtype=stored,
                             activation=graph.activation, hints=graph.info["hints"], fallback=graph.info["fallback"],
                             base=graph.info.get("base"))
            for ref, graph, started in pending}


def commit_records(fs: pafs.FileSystem, root: str, batch_id: str, records: list[dict]) -> pa.Table:
    """Write a batch's records part: the commit of the shards its records point at."""
    table = pa.Table.from_pylist(records, schema=RECORD_SCHEMA)
    write_parquet(fs, f"{root}/records/part-{batch_id}.parquet", table)
    return table


def _record(ref: CheckpointRef, status: str, started: float, **fields) -> dict:
    record = {"source_path": ref.uri, "file_size": ref.size, "mtime_ns": ref.mtime_ns, "status": status,
              "content_id": "", "family": "", "graph_mode": "", "num_params": 0, "source_dtype": "",
              "stored_dtype": "", "shard": "", "error_kind": "", "error": "", "activation": "", "hints": "",
              "fallback": ""}
    record.update(fields)
    record["seconds"] = time.perf_counter() - started
    return record


def _error_record(ref: CheckpointRef, exc: Exception, started: float) -> dict:
    kind = exc.kind if isinstance(exc, CheckpointError) else f"InternalError.{type(exc).__name__}"
    message = str(exc) if isinstance(exc, CheckpointError) else f"{ref.uri}: {type(exc).__name__}: {exc}"
    return _record(ref, "error", started, error_kind=kind, error=message[:2000])


# --- driver side ----------------------------------------------------------------------------------

def _record_parts(fs: pafs.FileSystem, root: str) -> pa.Table:
    """Every committed record, oldest part first."""
    parts = list_parts(fs, f"{root}/records")
    if not parts:
        return RECORD_SCHEMA.empty_table()
    return pa.concat_tables([pq.read_table(p, filesystem=fs, schema=RECORD_SCHEMA) for p in parts])


def read_records(fs: pafs.FileSystem, root: str) -> pa.Table:
    """The latest committed record of each source path, sorted by source path."""
    rows = {r["source_path"]: r for r in _record_parts(fs, root).to_pylist()}
    return pa.Table.from_pylist([rows[k] for k in sorted(rows)], schema=RECORD_SCHEMA)


def _clean_uncommitted(fs: pafs.FileSystem, root: str) -> int:
    """Delete shard files no committed record points at, and temporary files; returns how many."""
    committed = set(_record_parts(fs, root).column("shard").to_pylist())
    removed = 0
    for folder in ("shards", "records"):
        for info in fs.get_file_info(pafs.FileSelector(f"{root}/{folder}", allow_not_found=True)):
            orphan = folder == "shards" and info.base_name.split(".")[0] not in committed
            if info.base_name.startswith(TMP_PREFIX) or orphan:
                fs.delete_file(info.path)
                removed += 1
    return removed


def _stored_records(fs: pafs.FileSystem, root: str) -> tuple[list[dict], int]:
    """The latest records whose models are stored, and how many were dropped because the shard
    they point at is gone (with the duplicates of those models): those checkpoints are converted
    again, so a lost shard loses nothing that its source can give back."""
    shards = {i.base_name.split(".")[0] for i in fs.get_file_info(pafs.FileSelector(f"{root}/shards",
                                                                                   allow_not_found=True))
              if i.base_name.endswith(".graphs.parquet")}
    rows = read_records(fs, root).to_pylist()
    gone = {r["content_id"] for r in rows if r["status"] == "converted" and r["shard"] not in shards}
    kept = [r for r in rows if r["status"] == "error" or r["content_id"] not in gone]
    return kept, len(rows) - len(kept)


def consolidate(fs: pafs.FileSystem, root: str) -> tuple[pa.Table, pa.Table]:
    """Rebuild ``manifest.parquet`` and ``errors.parquet`` from the records; returns both tables.

    Duplicate records take the family and graph mode of the stored copy of their content id."""
    records = read_records(fs, root)
    rows = records.to_pylist()
    stored = {r["content_id"]: r for r in rows if r["status"] == "converted"}
    manifest_rows = []
    for r in rows:
        if r["status"] == "duplicate" and r["content_id"] in stored:
            original = stored[r["content_id"]]
            r = {**r, **{k: original[k] for k in ("family", "graph_mode", "stored_dtype", "shard", "activation",
                                                  "hints", "fallback", "base")}}
        if r["status"] != "error":
            manifest_rows.append({k: r[k] for k in MANIFEST_COLUMNS})
    manifest = pa.Table.from_pylist(manifest_rows, schema=pa.schema([RECORD_SCHEMA.field(c) for c in MANIFEST_COLUMNS]))
    errors = records.filter(pa.compute.equal(records.column("status"), "error")).select(ERROR_COLUMNS)
    write_parquet(fs, f"{root}/manifest.parquet", manifest)
    write_parquet(fs, f"{root}/errors.parquet", errors)
    return manifest, errors


MANIFEST_COLUMNS = ["content_id", "source_path", "status", "family", "graph_mode", "num_params", "source_dtype",
                    "stored_dtype", "shard", "file_size", "activation", "hints", "fallback", "base"]
ERROR_COLUMNS = ["source_path", "error_kind", "error", "file_size"]


def run_ingest(config: IngestConfig) -> dict:
    """Ingest ``config.inputs`` into ``config.output``; returns a summary dict. Ray must be running."""
    import ray.data

    fs, root = resolve(config.output)
    for folder in ("shards", "records"):
        fs.create_dir(f"{root}/{folder}", recursive=True)
    cleaned = _clean_uncommitted(fs, root)
    previous, lost = _stored_records(fs, root)
    done = {(r["source_path"], r["file_size"], r["mtime_ns"]) for r in previous}
    refs = discover(config.inputs)
    todo = [r for r in refs if (r.uri, r.size, r.mtime_ns) not in done]
    known = [r["content_id"] for r in previous if r["status"] == "converted"]

    started = time.perf_counter()
    new_records, first = [], (0.0, 0)  # when the first batch came back, and its size
    if todo:
        registry = ContentRegistry.remote(known)
        num_actors = config.num_actors or max(1, min(int(ray.cluster_resources().get("CPU", 1)), len(todo)))
        batch_size = config.batch_size or batch_size_for([r.size for r in todo], num_actors)
        ds = ray.data.from_items([{"uri": r.uri, "size": r.size, "mtime_ns": r.mtime_ns} for r in todo],
                                 override_num_blocks=max(1, -(-len(todo) // batch_size)))
        ds = ds.map_batches(GraphConverter, batch_size=batch_size, batch_format="numpy",
                            compute=ray.data.ActorPoolStrategy(size=num_actors), num_cpus=1,
                            fn_constructor_kwargs={"output": config.output, "precision": config.precision,
                                                   "check_finite": config.check_finite, "registry": registry,
                                                   "hints": config.hints})
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            if not new_records:
                first = (time.perf_counter() - started, batch.num_rows)
            new_records.append(batch)
        ray.kill(registry)
    seconds = time.perf_counter() - started
    manifest, errors = consolidate(fs, root)

    run = pa.concat_tables(new_records).to_pylist() if new_records else []
    stored = manifest.filter(pa.compute.equal(manifest.column("status"), "converted")).to_pylist()
    by_family: dict[str, int] = {}
    for r in stored:
        key = f"{r['family']}/{r['graph_mode']}"
        by_family[key] = by_family.get(key, 0) + 1
    status_counts = {s: sum(r["status"] == s for r in run) for s in ("converted", "duplicate", "error")}
    return {"output": config.output, "discovered": len(refs), "skipped_unchanged": len(refs) - len(todo),
            "cleaned_uncommitted": cleaned, "redone_lost": lost, **status_counts, "seconds": round(seconds, 3),
            "checkpoints_per_s": round(len(todo) / seconds, 1) if todo and seconds else 0.0,
            "first_batch_s": round(first[0], 3),  # start-up: actors started, one batch converted
            "steady_checkpoints_per_s": round((len(todo) - first[1]) / (seconds - first[0]), 1)
            if len(todo) > first[1] and seconds > first[0] else 0.0,
            "stored_models": len(stored), "stored_by_family": dict(sorted(by_family.items())),
            "total_errors": errors.num_rows,
            "run_errors": [(r["source_path"], r["error_kind"], r["error"]) for r in run if r["status"] == "error"]}
