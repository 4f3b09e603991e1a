"""Aligning many pairs as Ray tasks: pairs from a zoo catalog (all against an anchor, random same-task
pairs, or given), one task per pair, one results row per pair (failures recorded, the rest goes on).

A pair is interpolated when both models have catalog rows (the task's data and architecture); a
same-task pair shares task, family, activation and architecture.
"""
from __future__ import annotations

import posixpath
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import ray
from tqdm import tqdm

from pipeline.checkpoint import open_checkpoint, save_checkpoint
from pipeline.graph import build_graph
from pipeline.graph.hints import Sidecars
from pipeline.graph.layouts import checkpoint_tensors
from pipeline.rebasin.interpolate import ZooEvaluator, export_merged, plot_paths
from pipeline.rebasin.matching import RESTART_BUDGET, match
from pipeline.storage import join, resolve, write_parquet

RESULT_SCHEMA = pa.schema([
    ("pair", pa.string()), ("model_a", pa.string()), ("model_b", pa.string()), ("family", pa.string()),
    ("task", pa.string()), ("objective", pa.float64()), ("naive_objective", pa.float64()),
    ("similarity", pa.float64()), ("naive_similarity", pa.float64()), ("sweeps", pa.int32()),
    ("barrier_naive", pa.float64()), ("barrier_rebasin", pa.float64()), ("loss_a", pa.float64()),
    ("loss_b", pa.float64()), ("metric_name", pa.string()), ("metric_mid_naive", pa.float64()),
    ("metric_mid_rebasin", pa.float64()), ("match_seconds", pa.float64()), ("seconds", pa.float64()),
    ("aligned_path", pa.string()), ("error", pa.string()),
])
_ARCH_FIELDS = ("task", "family", "activation", "arch")


@dataclass
class Pair:
    """Models A (the reference) and B (aligned to A): checkpoint paths or URIs, catalog rows if known."""
    a: str
    b: str
    row_a: dict = field(default_factory=dict)
    row_b: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.row_a.get('model_id') or _stem(self.a)}~{self.row_b.get('model_id') or _stem(self.b)}"


@dataclass
class Options:
    restarts: int = 3
    out_dir: str = ""           # where aligned/merged checkpoints and curves go (nothing saved if empty)
    save_aligned: bool = False
    merge_alpha: float | None = None
    plots: bool = False
    rescale: bool = False       # aligned B gets A's per-neuron ReLU scales (default: keeps its own)
    restart_budget: float = RESTART_BUDGET
    hints: dict = field(default_factory=dict)  # command-line hints (pipeline.graph.hints), checked


def _stem(path: str) -> str:
    return posixpath.basename(path.rstrip("/")).removesuffix(".safetensors")


def _rows(catalog: pa.Table, zoo_dir: str, trained_only: bool = False) -> list[dict]:
    """Catalog rows with full paths; ``trained_only``: without planted copies (``duplicate_of``)."""
    return [{**r, "path": posixpath.join(zoo_dir, r["path"])} for r in catalog.to_pylist()
            if not (trained_only and r.get("duplicate_of"))]


def anchor_pairs(catalog: pa.Table, zoo_dir: str, anchor: str) -> list[Pair]:
    """The anchor against every other trained model of its task and architecture."""
    rows = _rows(catalog, zoo_dir, trained_only=True)
    a = next((r for r in _rows(catalog, zoo_dir) if r["model_id"] == anchor), None)
    if a is None:
        raise KeyError(f"anchor {anchor!r} is not in the catalog")
    same = [r for r in rows if r["model_id"] != anchor and all(r[k] == a[k] for k in _ARCH_FIELDS)]
    return [Pair(a["path"], r["path"], a, r) for r in same]


def random_pairs(catalog: pa.Table, zoo_dir: str, per_family: int, seed: int = 0) -> list[Pair]:
    """Up to ``per_family`` distinct random same-task pairs of trained models (no planted copies) for
    every family of the catalog."""
    rng = np.random.default_rng(seed)
    cells: dict[tuple, list[dict]] = {}
    for r in _rows(catalog, zoo_dir, trained_only=True):
        cells.setdefault(tuple(r[k] for k in _ARCH_FIELDS), []).append(r)
    pairs = []
    for family in sorted({key[1] for key in cells}):
        groups = [rows for key, rows in sorted(cells.items()) if key[1] == family and len(rows) > 1]
        counts = np.array([len(rows) * (len(rows) - 1) // 2 for rows in groups], dtype=np.float64)
        chosen: set[tuple[int, int, int]] = set()
        while len(chosen) < min(per_family, counts.sum()):  # uniform over pairs, none enumerated
            cell = int(rng.choice(len(groups), p=counts / counts.sum()))
            i, j = sorted(rng.choice(len(groups[cell]), 2, replace=False))
            chosen.add((cell, int(i), int(j)))
        pairs += [Pair(groups[c][i]["path"], groups[c][j]["path"], groups[c][i], groups[c][j]) for c, i, j in sorted(chosen)]
    return pairs


def given_pairs(specs: list[tuple[str, str]], catalog: pa.Table | None = None, zoo_dir: str = "") -> list[Pair]:
    """Pairs named by model id (looked up in the catalog) or by checkpoint path."""
    rows = {r["model_id"]: r for r in _rows(catalog, zoo_dir)} if catalog is not None else {}
    return [Pair(rows[a]["path"] if a in rows else a, rows[b]["path"] if b in rows else b,
                 rows.get(a, {}), rows.get(b, {})) for a, b in specs]


def align_pair(pair: Pair, options: Options) -> dict:
    """Align B to A, interpolate both paths when the catalog allows, save what ``options`` ask; one
    results row (``error`` set, the rest null, on failure)."""
    started = time.perf_counter()
    row = {"pair": pair.name, "model_a": pair.row_a.get("model_id") or pair.a,
           "model_b": pair.row_b.get("model_id") or pair.b, "family": pair.row_a.get("family"),
           "task": pair.row_a.get("task")}
    try:
        ckpt_a, ckpt_b = open_checkpoint(pair.a), open_checkpoint(pair.b)
        sidecars = Sidecars()
        graph_a, graph_b = (build_graph(c, sidecar=sidecars.hints_for(p), command_line=options.hints)
                            for c, p in ((ckpt_a, pair.a), (ckpt_b, pair.b)))
        result = match(graph_a, graph_b, restarts=options.restarts, budget=options.restart_budget,
                       rescale=options.rescale)
        row.update(family=row["family"] or graph_a.family, objective=result.objective,
                   naive_objective=result.naive_objective, similarity=result.similarity,
                   naive_similarity=result.naive_similarity, sweeps=result.sweeps, match_seconds=result.seconds)
        if options.out_dir and options.save_aligned:
            row["aligned_path"] = posixpath.join(options.out_dir, "aligned", f"{pair.name}.safetensors")
            save_checkpoint(checkpoint_tensors(result.aligned), row["aligned_path"], {**ckpt_b.metadata, "aligned_to": row["model_a"]})
        if pair.row_a and pair.row_b:
            evaluate = ZooEvaluator(pair.row_a, graph_a.tensors)
            naive, rebasin = evaluate.path(graph_a.tensors, graph_b.tensors), evaluate.path(graph_a.tensors, result.aligned)
            mid = len(naive.alphas) // 2
            row.update(barrier_naive=naive.barrier, barrier_rebasin=rebasin.barrier, loss_a=float(naive.loss[0]),
                       loss_b=float(naive.loss[-1]), metric_name=naive.metric_name,
                       metric_mid_naive=float(naive.metric[mid]), metric_mid_rebasin=float(rebasin.metric[mid]))
            if options.out_dir and options.plots:
                plot_paths({"naive": naive, "re-basin": rebasin}, join(options.out_dir, "curves", f"{pair.name}.png"),
                           pair.name)
        if options.out_dir and options.merge_alpha is not None:
            export_merged(graph_a.tensors, result.aligned, options.merge_alpha,
                          posixpath.join(options.out_dir, "merged", f"{pair.name}.safetensors"),
                          {"a": row["model_a"], "b": row["model_b"], "b_aligned_to": row["model_a"]}, ckpt_a.metadata)
    except Exception as exc:  # noqa: BLE001 -- a pair's failure is its row, the others go on
        row["error"] = f"{type(exc).__name__}: {exc}"
    row["seconds"] = time.perf_counter() - started
    return row


def _align_pairs(pairs: list[Pair], options: Options) -> list[dict]:
    return [align_pair(p, options) for p in pairs]


def run_pairs(pairs: list[Pair], options: Options, pairs_per_task: int = 1) -> pa.Table:
    """Align ``pairs`` as Ray tasks (1 CPU each, ``pairs_per_task`` pairs per task); the results table in
    pair order. Ray must be running."""
    task = ray.remote(num_cpus=1)(_align_pairs)
    chunks = [pairs[i:i + pairs_per_task] for i in range(0, len(pairs), pairs_per_task)]
    pending = {task.remote(chunk, options): chunk for chunk in chunks}
    rows = []
    with tqdm(total=len(pairs), desc="aligning pairs", unit="pair") as bar:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            chunk = pending.pop(done[0])
            try:
                rows += ray.get(done[0])
            except Exception as exc:  # noqa: BLE001 -- a lost worker fails its pairs only
                rows += [{"pair": p.name, "model_a": p.a, "model_b": p.b, "error": f"{type(exc).__name__}: {exc}"}
                         for p in chunk]
            bar.update(len(chunk))
    order = {p.name: i for i, p in enumerate(pairs)}
    rows.sort(key=lambda r: order.get(r["pair"], len(order)))
    return pa.Table.from_pylist([{k: r.get(k) for k in RESULT_SCHEMA.names} for r in rows], schema=RESULT_SCHEMA)


def write_results(table: pa.Table, out_dir: str) -> str:
    """``<out_dir>/results.parquet``; returns its path."""
    fs, root = resolve(out_dir)
    fs.create_dir(root, recursive=True)
    write_parquet(fs, posixpath.join(root, "results.parquet"), table)
    return posixpath.join(out_dir, "results.parquet")


def summarize(table: pa.Table) -> list[dict]:
    """Per family: pairs, errors, mean and median barrier naive vs re-basin, mean cosine similarity
    (matching space) naive vs aligned, mean matching seconds."""
    rows = table.to_pylist()
    out = []
    for family in sorted({r["family"] or "?" for r in rows}):
        ok = [r for r in rows if (r["family"] or "?") == family and not r["error"]]

        def mean(key, reduce=np.mean):
            values = [r[key] for r in ok if r[key] is not None]
            return float(reduce(values)) if values else float("nan")
        out.append({"family": family, "pairs": len(ok),
                    "errors": sum(1 for r in rows if (r["family"] or "?") == family and r["error"]),
                    "barrier_naive": mean("barrier_naive"), "barrier_rebasin": mean("barrier_rebasin"),
                    "barrier_naive_median": mean("barrier_naive", np.median),
                    "barrier_rebasin_median": mean("barrier_rebasin", np.median),
                    "similarity_naive": mean("naive_similarity"), "similarity_rebasin": mean("similarity"),
                    "match_seconds": mean("match_seconds")})
    return out
