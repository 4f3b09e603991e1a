"""Weight graphs: the format (:mod:`.schema`), family builders (:mod:`.builders`), shards (:mod:`.rows`)."""
from pipeline.graph.builders import build_graph
from pipeline.graph.rows import read_shard, tables_to_graphs, write_shard
from pipeline.graph.schema import GRAPH_SCHEMA, WEIGHT_SCHEMA, EdgeBlock, NodeGroup, WeightGraph

__all__ = ["GRAPH_SCHEMA", "WEIGHT_SCHEMA", "EdgeBlock", "NodeGroup", "WeightGraph", "build_graph", "read_shard",
           "tables_to_graphs", "write_shard"]
