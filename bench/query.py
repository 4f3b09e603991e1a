"""Query benchmark: top-10 latency by model id and by checkpoint file for indexes of 1e3, 1e4 and 1e5
vectors (synthetic unit vectors; ``Flat`` exact search, and ``HNSW32`` for comparison), and
end-to-end embed_zoo throughput on a stored zoo.

    python bench/query.py --graphs data/graphs     # the default zoo's ingestion output
    python bench/query.py                          # embed_zoo on 2,000 generated small models

Queries go through :class:`pipeline.search.ZooSearch` (id lookup, faiss search, filtering,
metadata). By-file queries read, convert and embed a small checkpoint (alternately a
Small-CNN-Zoo CNN and an MLP) with an untrained ScaleGMN of the default size (latency does not depend
on training). Prints a table, then one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from pipeline.constants import EMBEDDING_DIM as DIM


def _percentiles(times: list[float]) -> tuple[float, float]:
    ms = np.array(times) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def synthetic_zoo(folder: str, n: int, factory: str, version: str, seed: int = 0) -> None:
    """An embed_zoo-shaped output (index) and ingestion-shaped manifest of ``n`` random models."""
    from pipeline.search import ModelIndex

    rng = np.random.default_rng(seed)
    ids = [f"{i:064x}" for i in range(n)]
    index = ModelIndex(DIM, version, factory)
    index.add(ids, rng.standard_normal((n, DIM), dtype=np.float32), version)
    index.save(os.path.join(folder, "out", "index"))
    os.makedirs(os.path.join(folder, "graphs"), exist_ok=True)
    families = np.array(["mlp", "cnn", "resnet", "inr"])[rng.integers(0, 4, n)]
    pq.write_table(pa.table({"content_id": ids, "source_path": [f"/zoo/m{i}.safetensors" for i in range(n)],
                             "status": ["converted"] * n, "family": families,
                             "num_params": rng.integers(1000, 100000, n)}),
                   os.path.join(folder, "graphs", "manifest.parquet"))


def bench_sizes(folder: str, sizes: list[int], queries: int, state: str, version: str) -> list[dict]:
    from pipeline.search import Filters, ZooSearch
    from pipeline.zoo.synthetic import SMALL_CNN, write_random

    files = []
    for i in range(8):
        path = os.path.join(folder, f"query{i}.safetensors")
        shapes = SMALL_CNN if i % 2 == 0 else {"layers.0.weight": (64, 13), "layers.0.bias": (64,),
                                              "layers.1.weight": (3, 64), "layers.1.bias": (3,)}
        write_random(path, shapes, i, {"activation": "relu"})
        files.append(path)
    rows = []
    for n in sizes:
        for factory in ("Flat", "HNSW32"):
            zoo = os.path.join(folder, f"{n}-{factory}")
            started = time.perf_counter()
            synthetic_zoo(zoo, n, factory, version)
            build_s = time.perf_counter() - started
            search = ZooSearch(os.path.join(zoo, "out"), os.path.join(zoo, "graphs"), encoder_state=state)
            rng = np.random.default_rng(1)
            ids = [search.index.ids[i] for i in rng.integers(0, n, queries)]
            search.by_id(ids[0], 10)  # warm-up
            by_id = []
            for cid in ids:
                t = time.perf_counter()
                search.by_id(cid, 10)
                by_id.append(time.perf_counter() - t)
            filtered = []
            for cid in ids[: queries // 2]:
                t = time.perf_counter()
                search.by_id(cid, 10, Filters(family="cnn", max_params=50000))
                filtered.append(time.perf_counter() - t)
            by_file = []
            if factory == "Flat":
                search.by_file(files[0], 10)  # warm-up: loads the encoder
                for i in range(max(20, queries // 10)):
                    t = time.perf_counter()
                    search.by_file(files[i % len(files)], 10)
                    by_file.append(time.perf_counter() - t)
            row = {"n": n, "factory": factory, "build_s": build_s}
            row["byid_p50_ms"], row["byid_p99_ms"] = _percentiles(by_id)
            row["filtered_p50_ms"], row["filtered_p99_ms"] = _percentiles(filtered)
            row["byfile_p50_ms"], row["byfile_p99_ms"] = _percentiles(by_file) if by_file else (np.nan, np.nan)
            rows.append(row)
            print(f"{n:>8} {factory:<8} {build_s:>8.2f} {row['byid_p50_ms']:>9.3f} {row['byid_p99_ms']:>9.3f} "
                  f"{row['filtered_p50_ms']:>9.3f} {row['filtered_p99_ms']:>9.3f} "
                  f"{row['byfile_p50_ms']:>9.2f} {row['byfile_p99_ms']:>9.2f}", flush=True)
    return rows


def bench_embed_zoo(graphs: str, state: str, folder: str, subset: int = 300) -> dict:
    """embed_zoo on ``subset`` models, then on all, each into a fresh folder: the throughput after
    start-up is the extra models over the extra time (start-up, actor creation, encoder loading and
    index writing cancel out)."""
    from pipeline.ingest import stored_models
    from pipeline.ray_utils import ensure_ray
    from pipeline.search import run_embed

    ensure_ray()
    subset = min(subset, stored_models(graphs).num_rows // 2)  # a small zoo: half of it
    runs = []
    for limit in (subset, None):
        started = time.perf_counter()
        summary = run_embed(graphs, state, os.path.join(folder, f"embed-{limit}"), limit=limit)
        runs.append((summary["embedded_now"], time.perf_counter() - started))
    (n_small, t_small), (n_all, t_all) = runs
    return {"embedded_now": n_all, "total_s": t_all, "startup_s": t_small - n_small * (t_all - t_small) / (n_all - n_small),
            "models_per_s_after_startup": (n_all - n_small) / max(t_all - t_small, 1e-9)}


def generated_graphs(folder: str, count: int) -> str:
    """An ingestion output of ``count`` random small models, alternately a Small-CNN-Zoo CNN and a
    3-layer MLP (bench/encode.py's shapes), for embed_zoo when no zoo is given."""
    from pipeline.ingest import IngestConfig, run_ingest
    from pipeline.ray_utils import ensure_ray
    from pipeline.zoo.synthetic import write_random
    from encode import small_shapes

    models = os.path.join(folder, "generated")
    os.makedirs(models)
    for i in range(count):
        shapes, meta = small_shapes(i)
        write_random(os.path.join(models, f"small{i:05d}.safetensors"), shapes, i, meta)
    ensure_ray()
    run_ingest(IngestConfig([models], os.path.join(folder, "generated-graphs")))
    return os.path.join(folder, "generated-graphs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graphs", default=None, help="an ingestion output to run embed_zoo on")
    parser.add_argument("--generate", type=int, default=2000,
                        help="without --graphs: this many small models generated and ingested for embed_zoo")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--queries", type=int, default=500)
    args = parser.parse_args()
    torch.set_num_threads(1)

    from pipeline.encoders import build_encoder
    from pipeline.encoders.state import EncoderWithHead, encoder_version, save_state

    with tempfile.TemporaryDirectory() as folder:
        torch.manual_seed(0)
        state = os.path.join(folder, "scale_gmn.pt")
        save_state(EncoderWithHead(build_encoder("scale_gmn"), DIM),
                   {"encoder": "scale_gmn", "encoder_kwargs": {}}, state)
        version = encoder_version(state, "scale_gmn")
        print("top-10 query latency (ms), one thread; filtered = family and parameter-range filters")
        print(f"{'vectors':>8} {'index':<8} {'build s':>8} {'id p50':>9} {'id p99':>9} {'filt p50':>9} "
              f"{'filt p99':>9} {'file p50':>9} {'file p99':>9}")
        rows = bench_sizes(folder, args.sizes, args.queries, state, version)
        graphs = args.graphs or generated_graphs(folder, args.generate)
        embed = bench_embed_zoo(graphs, state, folder)
    if embed:
        print(f"\nembed_zoo on {args.graphs or f'{args.generate} generated models'}: {embed['embedded_now']} models in {embed['total_s']:.1f}s "
              f"(start-up about {embed['startup_s']:.1f}s), {embed['models_per_s_after_startup']:.0f} models/s "
              "after start-up (incl. weight fingerprints)")

    def pick(n, factory, key):
        return next((r[key] for r in rows if r["n"] == n and r["factory"] == factory), None)

    print(json.dumps({
        "byid_top10_p99_ms_1e5": pick(100000, "Flat", "byid_p99_ms"),
        "byid_top10_p50_ms_1e5": pick(100000, "Flat", "byid_p50_ms"),
        "byid_top10_p99_ms_1e5_hnsw": pick(100000, "HNSW32", "byid_p99_ms"),
        "byfile_top10_p99_ms_1e4": pick(10000, "Flat", "byfile_p99_ms"),
        "byfile_top10_p50_ms_1e4": pick(10000, "Flat", "byfile_p50_ms"),
        "embed_zoo_models_per_s": embed.get("models_per_s_after_startup"),
        "embed_zoo_models": embed.get("embedded_now"),
        "embed_zoo_total_s": embed.get("total_s"),
    }))


if __name__ == "__main__":
    main()
