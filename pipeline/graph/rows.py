"""Shards: :class:`WeightGraph` lists <-> a graphs table and a weights table (see :mod:`.schema`).

Writing streams: weights are cast to the stored precision chunk by chunk (at most ``chunk_bytes``
held at once, or one tensor if larger) and handed to Arrow without another copy. Reading gives numpy
views of the Arrow buffers. Floating tensors are stored at the chosen precision, integer buffers
unchanged, so decoding returns the exact state dict at that precision.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline.checkpoint.dtypes import SAFETENSORS_DTYPES, STORED_PRECISIONS, dtype_name, is_float
from pipeline.checkpoint.errors import InvalidWeights
from pipeline.graph.schema import (EDGE_BLOCK_TYPE, GRAPH_SCHEMA, NODE_GROUP_TYPE, TENSOR_TYPE, WEIGHT_SCHEMA,
                                   EdgeBlock, WeightGraph, node_group_from_record)
from pipeline.storage import write_bytes_atomic

PIECE_BYTES = 4 * 1024 * 1024       # bytes of a tensor per weights row
READ_PIECES = 16                    # weights rows decoded at a time when reading a shard
BATCH_BYTES = 16 * 1024 * 1024      # weights buffered per write (one row group)
_FINITE_MAX = {"fp16": float(np.finfo(np.float16).max)}
#: Weights are stored uncompressed (floats barely compress and codecs hold extra copies); statistics
#: and dictionaries only where they help queries (on the weights they would copy every value).
GRAPHS_PARQUET = {"compression": "zstd",
                  "use_dictionary": ["source_layout", "family", "graph_mode", "activation", "source_dtype",
                                     "stored_dtype"]}
WEIGHTS_PARQUET = {"compression": {"content_id": "zstd", "index": "zstd", "data": "none"},
                   "use_dictionary": ["content_id"], "write_statistics": ["content_id", "index"],
                   "write_batch_size": 16}


def stored_dtype(array_dtype: np.dtype, precision: str) -> np.dtype:
    return STORED_PRECISIONS[precision] if is_float(array_dtype) else np.dtype(array_dtype)


def check_storable(graph: WeightGraph, precision: str) -> None:
    """Raise :class:`InvalidWeights` if a tensor overflows a narrower stored precision."""
    limit = _FINITE_MAX.get(precision)
    for name, t in graph.tensors.items():
        if limit and is_float(t.dtype) and t.dtype.itemsize > 2 and float(np.abs(t).max()) > limit:
            raise InvalidWeights(graph.info.get("source_path", "?"),
                                 f"tensor {name!r} has values beyond the {precision} range")


def graphs_table(graphs: list[WeightGraph], precision: str) -> pa.Table:
    """The graphs table: one row per graph (no weights). ``graph.info`` supplies content_id,
    source_path, source_layout, source_dtype and metadata."""
    info = [g.info for g in graphs]
    columns = {
        "content_id": [i["content_id"] for i in info],
        "source_path": [i.get("source_path", "") for i in info],
        "source_layout": [i.get("source_layout", "") for i in info],
        "family": [g.family for g in graphs],
        "graph_mode": [g.mode for g in graphs],
        "activation": [g.activation for g in graphs],
        "num_params": [g.num_params for g in graphs],
        "source_dtype": [i.get("source_dtype", "") for i in info],
        "stored_dtype": [dtype_name(STORED_PRECISIONS[precision])] * len(graphs),
        "metadata": [i.get("metadata", "{}") for i in info],
        "node_groups": _list_of_structs([g.node_groups for g in graphs], NODE_GROUP_TYPE),
        "edge_blocks": _list_of_structs([g.edge_blocks for g in graphs], EDGE_BLOCK_TYPE),
        "tensors": _list_of_structs([[(n, dtype_name(stored_dtype(t.dtype, precision)), t.shape)
                                      for n, t in g.tensors.items()] for g in graphs], TENSOR_TYPE),
    }
    arrays = [c if isinstance(c, pa.Array) else pa.array(c, f.type) for c, f in zip(columns.values(), GRAPH_SCHEMA)]
    return pa.Table.from_arrays(arrays, schema=GRAPH_SCHEMA)


def weight_batches(graphs: Iterable[WeightGraph], precision: str,
                   batch_bytes: int = BATCH_BYTES, piece_bytes: int = PIECE_BYTES) -> Iterator[pa.RecordBatch]:
    """The weights table in record batches of about ``batch_bytes``; tensors are cast to the stored
    precision piece by piece, so no more than a batch is ever held."""
    pieces, size = [], 0
    for g in graphs:
        for index, t in enumerate(g.tensors.values()):
            dt = stored_dtype(t.dtype, precision)
            flat = t.reshape(-1)
            step = max(1, piece_bytes // dt.itemsize)
            for start in range(0, flat.size, step):
                piece = flat[start:start + step]
                if pieces and size + piece.size * dt.itemsize > batch_bytes:
                    yield _weight_batch(pieces, size)
                    pieces, size = [], 0
                pieces.append((g.info["content_id"], index, piece, dt))
                size += piece.size * dt.itemsize
    if pieces:
        yield _weight_batch(pieces, size)


def _weight_batch(pieces: list[tuple[str, int, np.ndarray, np.dtype]], total: int) -> pa.RecordBatch:
    data = np.empty(total, np.uint8)
    offsets = np.empty(len(pieces) + 1, np.int32)
    position = 0
    for i, (_, _, piece, dt) in enumerate(pieces):
        offsets[i] = position
        np.copyto(data[position:position + piece.size * dt.itemsize].view(dt), piece, casting="unsafe")
        position += piece.size * dt.itemsize
    offsets[-1] = position
    values = pa.BinaryArray.from_buffers(pa.binary(), len(pieces), [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    return pa.RecordBatch.from_arrays([pa.array([p[0] for p in pieces], pa.string()),
                                       pa.array([p[1] for p in pieces], pa.int32()), values], schema=WEIGHT_SCHEMA)


def write_shard(fs: pafs.FileSystem, part: str, graphs: list[WeightGraph], precision: str = "fp32") -> None:
    """Write ``<part>.weights.parquet`` (streamed) then ``<part>.graphs.parquet``, each atomically.

    Callers should :func:`check_storable` each graph first."""
    def write_weights(stream):
        with pq.ParquetWriter(stream, WEIGHT_SCHEMA, **WEIGHTS_PARQUET) as writer:
            for batch in weight_batches(graphs, precision):  # a row group each: write_batch would buffer them all
                writer.write_table(pa.Table.from_batches([batch]))

    table = graphs_table(graphs, precision)
    write_bytes_atomic(fs, f"{part}.weights.parquet", write_weights)
    write_bytes_atomic(fs, f"{part}.graphs.parquet", lambda stream: pq.write_table(table, stream, **GRAPHS_PARQUET))


def read_shard(fs: pafs.FileSystem, part: str) -> Iterator[WeightGraph]:
    """The graphs of a shard written by :func:`write_shard`, the weights read a few pieces at a time
    (each tensor's bytes are held once, whatever the model's size)."""
    graphs = pq.read_table(f"{part}.graphs.parquet", filesystem=fs, schema=GRAPH_SCHEMA)
    with fs.open_input_file(f"{part}.weights.parquet") as f:
        # pre_buffer would read every column chunk ahead: the whole file in memory at once
        yield from tables_to_graphs(graphs, pq.ParquetFile(f, pre_buffer=False).iter_batches(batch_size=READ_PIECES))


def _list_of_structs(rows: list[list], struct: pa.StructType) -> pa.ListArray:
    """``list<struct>`` column from per-row lists of tuples (fields in the struct's order), built
    field by field (much faster than converting one dict per item)."""
    items = [x for row in rows for x in row]
    fields = list(zip(*items)) if items else [[] for _ in struct]
    children = [pa.array([list(v) for v in column] if pa.types.is_list(f.type) else list(column), f.type)
                for column, f in zip(fields, struct)]
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.StructArray.from_arrays(children, fields=list(struct)))


def _binary_views(column: pa.ChunkedArray | pa.Array) -> Iterator[np.ndarray]:
    """Each value of a binary column as a zero-copy uint8 numpy view."""
    for chunk in (column.chunks if isinstance(column, pa.ChunkedArray) else [column]):
        _, offsets_buf, data_buf = chunk.buffers()
        dtype = np.int64 if pa.types.is_large_binary(chunk.type) else np.int32
        offsets = np.frombuffer(offsets_buf, dtype)[chunk.offset:chunk.offset + len(chunk) + 1]
        data = np.frombuffer(data_buf, np.uint8) if data_buf is not None else np.empty(0, np.uint8)
        for i in range(len(chunk)):
            yield data[offsets[i]:offsets[i + 1]]


def _pieces(batches: Iterable[pa.RecordBatch]) -> Iterator[tuple[str, int, np.ndarray]]:
    """``(content_id, tensor index, bytes)`` of every weights row, batch by batch."""
    for batch in batches:
        yield from zip(batch.column(0).to_pylist(), batch.column(1).to_pylist(), _binary_views(batch.column(2)))


def tables_to_graphs(graphs: pa.Table, weights: pa.Table | Iterable[pa.RecordBatch]) -> Iterator[WeightGraph]:
    """Graphs from a graphs table and its weights (a table or its record batches, rows in write
    order). A tensor stored in one piece is a zero-copy view of its batch's buffer; a larger one is
    copied piece by piece into an array of its own."""
    pieces = _pieces(weights.to_batches() if isinstance(weights, pa.Table) else weights)
    upcoming = next(pieces, None)
    for rec in graphs.to_pylist():
        tensors = {}
        for index, spec in enumerate(rec["tensors"]):
            dtype = SAFETENSORS_DTYPES[spec["dtype"]]
            size = int(np.prod(spec["shape"])) * dtype.itemsize
            raw, filled = None, 0
            while upcoming is not None and upcoming[:2] == (rec["content_id"], index):
                piece = upcoming[2]
                if filled + piece.size > size:
                    raise ValueError(f"weights of tensor {spec['name']!r} of {rec['content_id']} overrun its shape")
                if raw is None and piece.size == size:
                    raw = piece
                else:
                    raw = np.empty(size, np.uint8) if raw is None else raw
                    raw[filled:filled + piece.size] = piece
                filled += piece.size
                upcoming = next(pieces, None)
            if raw is None or filled != size:
                raise ValueError(f"weights of tensor {spec['name']!r} of {rec['content_id']} are missing")
            tensors[spec["name"]] = raw.view(dtype).reshape(spec["shape"])
        yield WeightGraph(
            node_groups=[node_group_from_record(n) for n in rec["node_groups"]],
            edge_blocks=[EdgeBlock(**b) for b in rec["edge_blocks"]],
            tensors=tensors, family=rec["family"], mode=rec["graph_mode"], activation=rec["activation"],
            info={k: rec[k] for k in ("content_id", "source_path", "source_layout", "source_dtype", "stored_dtype",
                                      "metadata")})


def graph_records(graphs: list[WeightGraph], precision: str = "fp32") -> pa.Table:
    """Self-contained rows (graphs table plus ``tensor_data``: each tensor's bytes) for passing small
    models through Ray Data; :func:`records_to_graphs` reads them back."""
    table = graphs_table(graphs, precision)
    data = [[stored_bytes(t, precision) for t in g.tensors.values()] for g in graphs]
    return table.append_column("tensor_data", pa.array(data, pa.list_(pa.large_binary())))


def stored_bytes(tensor: np.ndarray, precision: str) -> bytes:
    return np.ascontiguousarray(tensor, dtype=stored_dtype(tensor.dtype, precision)).tobytes()


def records_to_graphs(records: pa.Table) -> Iterator[WeightGraph]:
    """Graphs from :func:`graph_records` rows."""
    data = records.column("tensor_data").combine_chunks()
    counts = np.diff(np.asarray(data.offsets))
    weights = pa.table({"content_id": np.repeat(records.column("content_id").to_numpy(zero_copy_only=False), counts),
                        "index": np.concatenate([np.arange(c, dtype=np.int32) for c in counts]) if len(counts)
                        else np.empty(0, np.int32),
                        "data": data.flatten()})
    return tables_to_graphs(records.drop_columns(["tensor_data"]), weights)
