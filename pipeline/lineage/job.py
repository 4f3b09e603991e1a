"""The lineage job: checkpoints in, the recovered forest out (``lineage.parquet``, a PNG of the trees)
with PEFT adapters linked to the base they declare, and with ``evaluate``, it and the MoTHer
baseline (``mother.parquet``) scored against a lineage zoo's catalog (``metrics.json``).

Checkpoints are read and converted by Ray tasks (a bad file is recorded with its reason, the rest
go on); the graphs go to the object store once (about 32 KB per model of the lineage zoo); pair
tests fan out as Ray tasks in chunks, a fixed number per model. The baseline compares all pairs
(its memory and time grow with the square of the zoo), so it runs only to be scored, or when
asked (``baseline``). A model is named by :func:`pipeline.checkpoint.discover.model_name`, as the
index and the zoo's catalog name it.
"""
from __future__ import annotations

import json
import time

import networkx as nx
import numpy as np
import pyarrow as pa

from pipeline.lineage.forest import FRAGMENT, RELATED, WIDER_CANDIDATES, Edge, candidate_pairs, evidence_for, recover
from pipeline.lineage.metrics import score
from pipeline.lineage.mother import mother_forest
from pipeline.storage import join, read_parquet, resolve, write_file, write_parquet

#: pair tests per Ray task
PAIRS_PER_TASK = 64
LINEAGE_SCHEMA = pa.schema([("parent", pa.string()), ("child", pa.string()), ("type", pa.string()),
                            ("confidence", pa.float64()), ("evidence", pa.string())])


def _load(uris: list[str]) -> tuple[dict, list[tuple[str, str]], list[tuple[str, str, dict]]]:
    """``({name: graph}, [(uri, reason)], [(base name, adapter name, graph)])`` of checkpoints read
    and converted here; a PEFT adapter is merged into its declared base (see
    :mod:`pipeline.checkpoint.adapter`) and comes with its link."""
    from pipeline.checkpoint.adapter import open_model
    from pipeline.checkpoint.discover import model_name
    from pipeline.graph import build_graph

    graphs, errors, adapters = {}, [], []
    for uri in uris:
        try:
            checkpoint = open_model(uri)
            graph = build_graph(checkpoint)
            if checkpoint.base is None:
                graphs[model_name(uri)] = graph
            else:
                adapters.append((model_name(checkpoint.base), model_name(uri), graph))
        except Exception as exc:  # noqa: BLE001 -- any failure of one file is recorded, the rest go on
            errors.append((uri, f"{type(exc).__name__}: {exc}"))
    return graphs, errors, adapters


def adapter_edges(adapters: list[tuple[str, str, object]], graphs: dict) -> list[Edge]:
    """The declared edges of merged adapters, base -> adapter, typed ``lora`` and checked where the
    base is among the models: ``verified`` when the change is of low rank (:func:`.evidence.pair_evidence`)."""
    from pipeline.lineage.evidence import pair_evidence

    edges = []
    for base, name, graph in adapters:
        evidence = pair_evidence(graphs[base], graph) if base in graphs else {}
        edges.append(Edge(base, name, "lora", 1.0, {**evidence, "declared": True,
                                                   "verified": bool(evidence.get("changed_low_rank"))}))
    return edges


def edges_table(edges: list[Edge]) -> pa.Table:
    def plain(value):
        return value.item() if isinstance(value, np.generic) else value
    return pa.table({"parent": [e.parent for e in edges], "child": [e.child for e in edges],
                     "type": [e.type for e in edges], "confidence": [float(e.confidence) for e in edges],
                     "evidence": [json.dumps({k: plain(v) if not isinstance(v, tuple) else [plain(x) for x in v]
                                              for k, v in e.evidence.items()}, sort_keys=True) for e in edges]},
                    schema=LINEAGE_SCHEMA)


def run_lineage(inputs: list[str], out: str, catalog: str | None = None, plot: bool = True,
                baseline: bool | None = None) -> dict:
    """Recover the forest of the checkpoints under ``inputs`` into ``out``; with ``catalog`` (a
    lineage zoo's), score ours and MoTHer's. ``baseline``: run MoTHer (default: when scoring). Ray
    must be running. Returns the summary (and the metrics)."""
    import ray

    from pipeline.checkpoint.discover import discover

    started = time.perf_counter()
    uris = [r.uri for r in discover(inputs)]
    load = ray.remote(num_cpus=1)(_load)
    graphs, errors, adapters = {}, [], []
    for part, failed, linked in ray.get([load.remote(uris[i::8]) for i in range(min(8, len(uris)))]):
        graphs.update(part)
        errors += failed
        adapters += linked
    shared = ray.put(graphs)
    task = ray.remote(num_cpus=1)(evidence_for)

    def pair_tests(pairs: list[tuple[str, str]]) -> dict:
        found = {}
        for part in ray.get([task.remote(shared, pairs[i:i + PAIRS_PER_TASK]) for i in range(0, len(pairs), PAIRS_PER_TASK)]):
            found.update(part)
        return found

    pairs = candidate_pairs(sorted(graphs), graphs)
    evidence = pair_tests(pairs)
    linked = nx.Graph()
    linked.add_nodes_from(graphs)
    linked.add_edges_from(pair for pair, e in evidence.items() if e["distance"] < RELATED)
    if alone := {i for part in nx.connected_components(linked) if len(part) <= FRAGMENT for i in part}:
        wider = sorted(set(candidate_pairs(sorted(graphs), graphs, WIDER_CANDIDATES, query=alone)) - set(pairs))
        evidence.update(pair_tests(wider))
        pairs += wider
    declared = adapter_edges(adapters, graphs)  # both methods get the links the adapters declare
    edges = recover(graphs, evidence) + declared
    ours_s = time.perf_counter() - started
    baseline_started = time.perf_counter()
    run_baseline = bool(catalog) if baseline is None else baseline
    mother = mother_forest(graphs) + declared if run_baseline else None
    baseline_s = time.perf_counter() - baseline_started

    fs, root = resolve(out)
    fs.create_dir(root, recursive=True)
    write_parquet(fs, f"{root}/lineage.parquet", edges_table(edges))
    if mother is not None:
        write_parquet(fs, f"{root}/mother.parquet", edges_table(mother))
    write_parquet(fs, f"{root}/errors.parquet", pa.table({"source_path": [u for u, _ in errors],
                                                          "error": [r for _, r in errors]},
                                                         schema=pa.schema([("source_path", pa.string()), ("error", pa.string())])))
    if plot:
        plot_forest(edges, sorted(graphs), join(out, "lineage.png"))
    summary = {"models": len(graphs), "adapters": len(adapters), "errors": len(errors), "pairs_tested": len(pairs), "edges": len(edges),
               "seconds": round(ours_s, 2), "seconds_per_model": round(ours_s / max(1, len(graphs)), 4),
               "mother_seconds": round(baseline_s, 2) if mother is not None else None, "out": out}
    if catalog:
        rows = [r for r in read_parquet(catalog).to_pylist() if r["model_id"] in graphs]
        linked = {name for _, name, _ in adapters}
        ours, theirs = score(edges, rows, linked), score(mother, rows, linked)
        metrics = {"edge_f1": ours["f1"], "edge_precision": ours["precision"], "edge_recall": ours["recall"],
                   "direction_acc": ours["direction_acc"], "type_acc": ours["type_acc"], "ari": ours["ari"],
                   "edge_f1_plain": ours["plain"]["f1"], "edge_f1_transformed": ours["transformed"]["f1"],
                   "direction_acc_transformed": ours["transformed"]["direction_acc"],
                   "mother_edge_f1": theirs["f1"], "mother_direction_acc": theirs["direction_acc"],
                   "mother_ari": theirs["ari"], "mother_edge_f1_plain": theirs["plain"]["f1"],
                   "mother_edge_f1_transformed": theirs["transformed"]["f1"],
                   "seconds_per_model": summary["seconds_per_model"],
                   "mother_seconds_per_model": round(baseline_s / max(1, len(graphs)), 4),
                   "true_edges": ours["edges"], "models": len(rows), "ours": ours, "mother": theirs}
        write_file(join(out, "metrics.json"), json.dumps(metrics, indent=1, sort_keys=True))
        summary["metrics"] = metrics
    return summary


def plot_forest(edges: list[Edge], ids: list[str], png: str) -> None:
    """The forest as a PNG: one column block per tree, named by its root, parents above children,
    edges coloured by type."""
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import networkx as nx

    from pipeline.lineage import EDGE_TYPES

    graph = nx.DiGraph()
    graph.add_nodes_from(ids)
    graph.add_edges_from((e.parent, e.child, {"type": e.type}) for e in edges)
    position, x, labels = {}, 0, []
    for component in sorted(nx.weakly_connected_components(graph), key=lambda c: min(c)):
        roots = [n for n in component if graph.in_degree(n) == 0] or [min(component)]
        labels.append((x, min(roots)))
        depth = nx.multi_source_dijkstra_path_length(graph, roots, weight=lambda *_: 1)
        for level in sorted(set(depth.values())):
            row = sorted(n for n in component if depth.get(n) == level)
            for j, n in enumerate(row):
                position[n] = (x + j, -level)
        x += max(sum(1 for n in component if depth.get(n) == level) for level in set(depth.values())) + 1
    colours = dict(zip(EDGE_TYPES, plt.cm.tab10.colors))
    fig, ax = plt.subplots(figsize=(max(8, x * 0.35), 6))
    nx.draw_networkx_nodes(graph, position, node_size=30, ax=ax)
    shown = []
    for kind, colour in colours.items():
        typed = [(u, v) for u, v, d in graph.edges(data=True) if d["type"] == kind]
        if typed:
            nx.draw_networkx_edges(graph, position, typed, edge_color=[colour], arrowsize=6, ax=ax)
            shown.append(plt.Line2D([], [], color=colour, label=kind))
    for left, root in labels:  # each tree named by its root
        ax.text(left, 0.3, root, fontsize=5, rotation=20, ha="left", va="bottom")
    ax.legend(handles=shown, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    ax.set_axis_off()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    write_file(png, buffer.getvalue())


class Lineage:
    """A ``lineage.parquet`` table indexed for queries: each model's incoming and outgoing edges,
    built once (a server answers many queries from one table)."""

    def __init__(self, table: pa.Table):
        self.up: dict[str, list[dict]] = {}
        self.down: dict[str, list[dict]] = {}
        for r in table.select(["parent", "child", "type", "confidence"]).to_pylist():
            self.up.setdefault(r["child"], []).append(r)
            self.down.setdefault(r["parent"], []).append(r)

    def __contains__(self, model: str) -> bool:
        return model in self.up or model in self.down

    def of(self, model: str) -> dict:
        """``{"model", "parents", "children", "ancestors", "descendants"}``: each an edge dict
        (parent, child, type, confidence), ancestors and descendants nearest first."""
        return {"model": model, "parents": self.up.get(model, []), "children": self.down.get(model, []),
                "ancestors": self._walk(model, self.up, "parent"), "descendants": self._walk(model, self.down, "child")}

    @staticmethod
    def _walk(start: str, links: dict[str, list[dict]], key: str) -> list[dict]:
        seen, queue, out = {start}, [start], []
        while queue:
            node = queue.pop(0)
            for r in links.get(node, []):
                if r[key] not in seen:
                    seen.add(r[key])
                    queue.append(r[key])
                    out.append(r)
        return out
