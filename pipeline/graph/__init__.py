"""Weight graphs: the format (:mod:`.schema`), family builders (:mod:`.builders`), shard rows (:mod:`.rows`)."""
from pipeline.graph.builders import build_graph
from pipeline.graph.rows import graphs_to_table, table_to_graphs
from pipeline.graph.schema import GRAPH_SCHEMA, EdgeBlock, NodeGroup, WeightGraph

__all__ = ["GRAPH_SCHEMA", "EdgeBlock", "NodeGroup", "WeightGraph", "build_graph", "graphs_to_table",
           "table_to_graphs"]
