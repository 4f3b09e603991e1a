"""Family recognition, graph integrity, exact round trips through Parquet, and compact storage."""
from __future__ import annotations

import numpy as np
import pyarrow.fs as pafs
import pytest
import torch

from models import family_models
from pipeline.checkpoint import open_checkpoint, save_checkpoint
from pipeline.checkpoint.dtypes import STORED_PRECISIONS, is_float
from pipeline.graph import build_graph, read_shard, write_shard
from pipeline.zoo.models import MLP, Siren

FAMILIES = family_models()


def _graph(tmp_path, name):
    model, metadata, _ = FAMILIES[name]
    save_checkpoint(model.state_dict(), str(tmp_path / f"{name}.safetensors"), metadata)
    return build_graph(open_checkpoint(str(tmp_path / f"{name}.safetensors")))


@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_recognized_and_every_weight_graphed_once(tmp_path, name):
    graph = _graph(tmp_path, name)
    assert (graph.family, graph.mode) == (FAMILIES[name][2], "computational")
    uses = [b.tensor for b in graph.edge_blocks if b.tensor]
    uses += [t for g in graph.node_groups for t in (g.bias, *g.norm) if t]
    assert sorted(uses) == sorted(n for n, t in graph.tensors.items() if is_float(t.dtype)
                                  and not n.endswith("position_ids"))
    edge_values = sum(np.prod(graph.block_shape(b)) for b in graph.edge_blocks if b.kind != "residual")
    assert edge_values == sum(graph.tensors[b.tensor].size for b in graph.edge_blocks if b.tensor)
    for block in graph.edge_blocks:
        edge_index, features = graph.block_edges(block)
        assert edge_index.shape == (2, graph.block_num_edges(block)) and len(features) == edge_index.shape[1]
        offsets = graph.node_offsets
        assert edge_index[0].min() >= offsets[block.src] and edge_index[0].max() < offsets[block.src + 1]
        assert edge_index[1].min() >= offsets[block.dst] and edge_index[1].max() < offsets[block.dst + 1]


def test_symmetry_annotations(tmp_path):
    tanh = _graph(tmp_path, "mlp")
    assert [g.symmetry for g in tanh.node_groups] == ["none", "perm_sign", "perm_sign", "none"]
    relu = _graph(tmp_path, "mlp_relu")
    assert [g.kind for g in relu.node_groups] == ["input", "hidden", "hidden", "hidden", "output"]
    assert {g.symmetry for g in relu.node_groups if g.kind == "hidden"} == {"perm_scale"}
    res = _graph(tmp_path, "resmlp")
    streams = [g for g in res.node_groups if g.kind == "stream"]
    assert len(streams) == 3 and {g.perm_group for g in streams} == {"stream0"}
    assert sum(b.kind == "residual" for b in res.edge_blocks) == 2
    tv = _graph(tmp_path, "resnet_tv")
    assert len({g.perm_group for g in tv.node_groups if g.kind == "stream"}) == 2  # projection starts a new stream
    assert any(len(g.norm) == 4 for g in tv.node_groups)  # BatchNorm: weight, bias, running mean and var
    mobile = _graph(tmp_path, "mobilenet_tv")
    for block in (b for b in mobile.edge_blocks if b.kind == "depthwise"):  # a channel's input and output: one unit
        assert mobile.node_groups[block.src].perm_group == mobile.node_groups[block.dst].perm_group
    assert sum(b.kind == "residual" for b in mobile.edge_blocks) == 2
    bert = _graph(tmp_path, "bert")
    q, k, v = (next(g for g in bert.node_groups if g.kind == kind) for kind in ("query", "key", "value"))
    assert q.perm_group == k.perm_group != v.perm_group and q.heads == k.heads == v.heads == 4
    assert q.head_group == k.head_group == v.head_group
    assert {g.perm_group for g in bert.node_groups if g.kind == "stream"} == {"stream"}


def _graph_forward(graph, x: np.ndarray, activation) -> np.ndarray:
    """Evaluate a feed-forward graph of linear blocks by message passing over its edges."""
    offsets = graph.node_offsets
    values = np.zeros((x.shape[0], graph.num_nodes))
    values[:, offsets[0]:offsets[1]] = x
    for gi, group in enumerate(graph.node_groups[1:], start=1):
        total = np.zeros((x.shape[0], group.size))
        for block in (b for b in graph.edge_blocks if b.dst == gi):
            edge_index, features = graph.block_edges(block)
            np.add.at(total.T, edge_index[1] - offsets[gi], (features[:, 0] * values[:, edge_index[0]]).T)
        total += graph.tensors[group.bias] if group.bias else 0
        values[:, offsets[gi]:offsets[gi + 1]] = activation(total) if group.kind == "hidden" else total
    return values[:, offsets[-2]:]


@pytest.mark.parametrize("model,metadata,activation", [
    (MLP(5, [16, 8], 3, "tanh"), {"activation": "tanh"}, np.tanh),
    (Siren([16, 16], w0=1.0), {"activation": "sine"}, np.sin),
])
def test_graph_computes_the_network(tmp_path, model, metadata, activation):
    save_checkpoint(model.state_dict(), str(tmp_path / "m.safetensors"), metadata)
    graph = build_graph(open_checkpoint(str(tmp_path / "m.safetensors")))
    x = np.random.default_rng(0).normal(size=(7, graph.node_groups[0].size))
    expected = model(torch.from_numpy(x).float()).detach().numpy()
    np.testing.assert_allclose(_graph_forward(graph, x, activation), expected, rtol=1e-4, atol=1e-5)


def test_unknown_structure_falls_back_to_per_layer(tmp_path):
    tensors = {"a.mystery": torch.randn(3, 4), "b": torch.randn(5), "c": torch.randn(2, 3, 3, 3),
               "scale": torch.tensor(2.0), "steps": torch.tensor(7)}
    save_checkpoint(tensors, str(tmp_path / "odd.safetensors"))
    graph = build_graph(open_checkpoint(str(tmp_path / "odd.safetensors")))
    assert (graph.family, graph.mode) == ("unknown", "per_layer")
    assert [b.tensor for b in graph.edge_blocks] == ["a.mystery", "b", "c", "scale"]  # int buffers not graphed
    assert [graph.block_shape(b) for b in graph.edge_blocks] == [(3, 4, 1), (5, 1, 1), (2, 3, 9), (1, 1, 1)]
    assert {g.symmetry for g in graph.node_groups} == {"none"}


@pytest.mark.parametrize("precision", sorted(STORED_PRECISIONS))
def test_round_trip_bit_for_bit(tmp_path, precision):
    graphs = [_graph(tmp_path, name) for name in FAMILIES]
    write_shard(pafs.LocalFileSystem(), str(tmp_path / "part-0"), graphs, precision)
    decoded = list(read_shard(pafs.LocalFileSystem(), str(tmp_path / "part-0")))
    assert len(decoded) == len(graphs)
    for before, after in zip(graphs, decoded):
        assert (after.node_groups, after.edge_blocks, after.family, after.mode) == \
               (before.node_groups, before.edge_blocks, before.family, before.mode)
        assert list(after.tensors) == list(before.tensors)
        for name, original in before.tensors.items():
            expected = original.astype(STORED_PRECISIONS[precision]) if is_float(original.dtype) else original
            assert after.tensors[name].dtype == expected.dtype
            assert after.tensors[name].tobytes() == expected.tobytes(), name


def test_fp16_overflow_is_refused(tmp_path):
    from pipeline.checkpoint import InvalidWeights
    from pipeline.graph.rows import check_storable

    save_checkpoint({"w": torch.full((3, 3), 1e6)}, str(tmp_path / "big.safetensors"))
    graph = build_graph(open_checkpoint(str(tmp_path / "big.safetensors")))
    check_storable(graph, "bf16")
    with pytest.raises(InvalidWeights, match="fp16 range"):
        check_storable(graph, "fp16")


@pytest.mark.parametrize("precision,itemsize", [("fp32", 4), ("fp16", 2)])
def test_shard_costs_at_most_1_2x_the_weights(tmp_path, precision, itemsize):
    torch.manual_seed(0)
    graphs = []
    for i in range(20):
        model = MLP(20, [64, 64], 10, "relu")
        save_checkpoint(model.state_dict(), str(tmp_path / f"m{i}.safetensors"), {"activation": "relu"})
        graphs.append(build_graph(open_checkpoint(str(tmp_path / f"m{i}.safetensors"))))
    write_shard(pafs.LocalFileSystem(), str(tmp_path / "part-0"), graphs, precision)
    shard_bytes = sum(p.stat().st_size for p in tmp_path.glob("part-0.*.parquet"))
    assert shard_bytes <= 1.2 * sum(g.num_params for g in graphs) * itemsize


def test_tensors_split_into_pieces_join_exactly(tmp_path):
    import pyarrow as pa

    from pipeline.graph.rows import graphs_table, tables_to_graphs, weight_batches

    graphs = [_graph(tmp_path, name) for name in ("cnn", "bert")]
    weights = pa.Table.from_batches(list(weight_batches(graphs, "bf16", batch_bytes=1000, piece_bytes=96)))
    assert weights.num_rows > sum(len(g.tensors) for g in graphs)  # many tensors span several rows
    assert max(len(v) for v in weights.column("data").to_pylist()) <= 96
    for before, after in zip(graphs, tables_to_graphs(graphs_table(graphs, "bf16"), weights)):
        for name, t in before.tensors.items():
            expected = t.astype(STORED_PRECISIONS["bf16"]) if is_float(t.dtype) else t
            assert after.tensors[name].tobytes() == expected.tobytes()


def test_grouped_and_depthwise_edges_stay_within_their_channel_group(tmp_path):
    """A convolution in ``g`` channel groups has edges only from a group's inputs to its outputs,
    ``src/g`` per output channel; a depthwise one only ``i -> i``."""
    from pipeline.zoo.hf_tiny import tiny_models

    for name in ("regnet", "mobilenet_v2"):
        tiny_models()[name][0].save_pretrained(tmp_path / name)
        graph = build_graph(open_checkpoint(str(tmp_path / name)))
        offsets = graph.node_offsets
        blocks = [b for b in graph.edge_blocks if b.kind in ("grouped", "depthwise")]
        assert blocks
        for block in blocks:
            src_size, dst_size = graph.node_groups[block.src].size, graph.node_groups[block.dst].size
            per_dst = graph.tensors[block.tensor].shape[1]
            groups = src_size // per_dst
            edge_index, _ = graph.block_edges(block)
            src, dst = edge_index[0] - offsets[block.src], edge_index[1] - offsets[block.dst]
            assert len(src) == dst_size * per_dst
            np.testing.assert_array_equal(src // per_dst, dst // (dst_size // groups))
            if block.kind == "depthwise":
                np.testing.assert_array_equal(src, dst)
