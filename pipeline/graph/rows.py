"""Shard rows: :class:`WeightGraph` lists <-> Arrow tables with :data:`schema.GRAPH_SCHEMA`.

Weights are written once into one contiguous buffer per batch (cast to the stored precision in the
same pass) and handed to Arrow without another copy; reading gives numpy views of the Arrow buffers.
Floating tensors are stored at the chosen precision, integer buffers unchanged, so decoding returns
the exact state dict at that precision.
"""
from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from pipeline.checkpoint.dtypes import SAFETENSORS_DTYPES, STORED_PRECISIONS, count_nonfinite, dtype_name, is_float
from pipeline.checkpoint.errors import InvalidWeights, UnsupportedCheckpoint
from pipeline.graph.schema import (EDGE_BLOCK_TYPE, GRAPH_SCHEMA, NODE_GROUP_TYPE, TENSOR_TYPE, EdgeBlock,
                                   WeightGraph, node_group_from_record, node_group_record)

MAX_TENSOR_BYTES = 2**31 - 1  # Parquet BYTE_ARRAY values are limited to 2 GiB


def stored_dtype(array_dtype: np.dtype, precision: str) -> np.dtype:
    return STORED_PRECISIONS[precision] if is_float(array_dtype) else np.dtype(array_dtype)


def check_storable(graph: WeightGraph, precision: str) -> None:
    """Raise if a tensor cannot be a shard value (over 2 GiB at the stored precision)."""
    for name, t in graph.tensors.items():
        if t.size * stored_dtype(t.dtype, precision).itemsize > MAX_TENSOR_BYTES:
            raise UnsupportedCheckpoint(graph.info.get("source_path", "?"),
                                        f"tensor {name!r} is over 2 GiB at {precision}; shard values hold up to 2 GiB")


def graphs_to_table(graphs: list[WeightGraph], precision: str = "fp32") -> pa.Table:
    """One row per graph. ``graph.info`` supplies content_id, source_path, source_layout, source_dtype
    and metadata. Raises :class:`InvalidWeights` if narrowing to ``precision`` overflows."""
    plan, total = [], 0
    for g in graphs:
        for t in g.tensors.values():
            dt = stored_dtype(t.dtype, precision)
            plan.append((g, t, dt, total))
            total += t.size * dt.itemsize
    data = np.empty(total, np.uint8)
    value_offsets = np.empty(len(plan) + 1, np.int64)
    for i, (g, t, dt, offset) in enumerate(plan):
        value_offsets[i] = offset
        out = data[offset:offset + t.size * dt.itemsize].view(dt).reshape(t.shape)
        np.copyto(out, t, casting="unsafe")
        if dt.itemsize < t.dtype.itemsize and is_float(dt) and count_nonfinite(out):
            raise InvalidWeights(g.info.get("source_path", "?"), f"weights overflow {precision}")
    value_offsets[-1] = total
    values = pa.LargeBinaryArray.from_buffers(pa.large_binary(), len(plan),
                                              [None, pa.py_buffer(value_offsets), pa.py_buffer(data)])
    list_offsets = np.concatenate([[0], np.cumsum([len(g.tensors) for g in graphs])]).astype(np.int32)
    tensor_data = pa.ListArray.from_arrays(pa.array(list_offsets), values)

    info = [g.info for g in graphs]
    columns = {
        "content_id": [i["content_id"] for i in info],
        "source_path": [i.get("source_path", "") for i in info],
        "source_layout": [i.get("source_layout", "") for i in info],
        "family": [g.family for g in graphs],
        "graph_mode": [g.mode for g in graphs],
        "activation": [g.activation for g in graphs],
        "num_params": [sum(int(t.size) for t in g.tensors.values()) for g in graphs],
        "source_dtype": [i.get("source_dtype", "") for i in info],
        "stored_dtype": [dtype_name(STORED_PRECISIONS[precision])] * len(graphs),
        "metadata": [i.get("metadata", "{}") for i in info],
        "node_groups": pa.array([[node_group_record(n) for n in g.node_groups] for g in graphs],
                                pa.list_(NODE_GROUP_TYPE)),
        "edge_blocks": pa.array([[vars(b) for b in g.edge_blocks] for g in graphs], pa.list_(EDGE_BLOCK_TYPE)),
        "tensors": pa.array([[{"name": n, "dtype": dtype_name(stored_dtype(t.dtype, precision)),
                               "shape": list(t.shape)} for n, t in g.tensors.items()] for g in graphs],
                            pa.list_(TENSOR_TYPE)),
        "tensor_data": tensor_data,
    }
    arrays = [c if isinstance(c, pa.Array) else pa.array(c, f.type)
              for c, f in zip(columns.values(), GRAPH_SCHEMA)]
    return pa.Table.from_arrays(arrays, schema=GRAPH_SCHEMA)


def table_to_graphs(table: pa.Table) -> Iterator[WeightGraph]:
    """Graphs of a shard table, with tensors as zero-copy numpy views of the table's buffers."""
    structure = table.drop_columns(["tensor_data"]).to_pylist()
    for chunk_start, chunk in _chunks(table.column("tensor_data")):
        values = chunk.values
        _, offsets_buf, data_buf = values.buffers()
        offset_type = np.int64 if pa.types.is_large_binary(values.type) else np.int32
        value_offsets = np.frombuffer(offsets_buf, offset_type)[values.offset:values.offset + len(values) + 1]
        data = np.frombuffer(data_buf, np.uint8) if data_buf is not None else np.empty(0, np.uint8)
        list_offsets = np.frombuffer(chunk.buffers()[1], np.int32)[chunk.offset:chunk.offset + len(chunk) + 1]
        for row in range(len(chunk)):
            rec = structure[chunk_start + row]
            tensors = {}
            for j, spec in enumerate(rec["tensors"]):
                k = list_offsets[row] - list_offsets[0] + j
                dt = SAFETENSORS_DTYPES[spec["dtype"]]
                raw = data[value_offsets[k]:value_offsets[k + 1]]
                tensors[spec["name"]] = raw.view(dt).reshape(spec["shape"])
            yield WeightGraph(
                node_groups=[node_group_from_record(n) for n in rec["node_groups"]],
                edge_blocks=[EdgeBlock(**b) for b in rec["edge_blocks"]],
                tensors=tensors, family=rec["family"], mode=rec["graph_mode"], activation=rec["activation"],
                info={k: rec[k] for k in ("content_id", "source_path", "source_layout", "num_params",
                                          "source_dtype", "stored_dtype", "metadata")})


def _chunks(column: pa.ChunkedArray):
    start = 0
    for chunk in column.chunks:
        yield start, chunk
        start += len(chunk)


def graph_metadata(graph: WeightGraph) -> dict:
    """The stored safetensors ``__metadata__`` and ``config.json`` of a decoded graph."""
    return json.loads(graph.info.get("metadata") or "{}")
