"""Ingestion benchmark: conversion throughput against the raw read+write limit, the full Ray Data job
on thousands of small checkpoints, and one ~22M-parameter BERT-shaped checkpoint.

    python bench/ingest.py                 # 12,000 Small-CNN-Zoo checkpoints + a 22.7M BERT (MiniLM-L6 shape)
    python bench/ingest.py --small 3000    # quicker

The Ray Data job is compared with the same files split over one plain process per core, started
at once (``ray_vs_two_process_ratio`` on 2 cores; the job's time includes starting its actors).

Each single-process measurement runs in a fresh subprocess so its peak RSS is its own (best of 3
runs); the raw limit
(parse the same safetensors, write the same tensors to Parquet, no graph, no hashing) runs in the
same invocation, so ratios are comparable even when the machine's speed drifts. Prints a table, then
one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import psutil
import pyarrow as pa

# --- measured in a subprocess --------------------------------------------------------------------

def _raw(paths: list[str], out: str, batch: int) -> None:
    """Limit: parse the same safetensors and write the same tensor bytes with the shards' weights
    writer; no finite check, no hashing, no graph."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    from pipeline import storage
    from pipeline.checkpoint.safetensors_format import parse_safetensors
    from pipeline.graph.rows import WEIGHTS_PARQUET, weight_batches
    from pipeline.graph.schema import WEIGHT_SCHEMA, WeightGraph

    fs = pafs.LocalFileSystem()
    for start in range(0, len(paths), batch):
        bare = [WeightGraph([], [], parse_safetensors(storage.read_buffer(fs, p), p)[0], info={"content_id": p})
                for p in paths[start:start + batch]]
        with pq.ParquetWriter(f"{out}/raw-{start}.parquet", WEIGHT_SCHEMA, **WEIGHTS_PARQUET) as writer:
            for record_batch in weight_batches(bare, "fp32"):
                writer.write_table(pa.Table.from_batches([record_batch]))


def _convert(paths: list[str], out: str, batch: int) -> None:
    """The ingestion actor's work without Ray: open, check, hash, build the graph, write a shard."""
    import pyarrow.fs as pafs

    from pipeline.checkpoint.reader import open_checkpoint
    from pipeline.graph import build_graph, write_shard

    fs = pafs.LocalFileSystem()
    for start in range(0, len(paths), batch):
        graphs = [build_graph(c) for c in map(open_checkpoint, paths[start:start + batch])]
        write_shard(fs, f"{out}/part-{start}", graphs)


def measure_worker(kind: str, list_file: str, out: str, batch: int) -> None:
    os.makedirs(out, exist_ok=True)
    paths = open(list_file).read().split("\n")
    baseline = psutil.Process().memory_info().rss
    started = time.perf_counter()
    (_raw if kind == "raw" else _convert)(paths, out, batch)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seconds": seconds, "peak_rss": peak, "peak_rss_increase": peak - baseline}))


def best_of(kind: str, paths: list[str], batch: int = 64, repeats: int = 3) -> dict:
    """Fastest of ``repeats`` runs (timing noise on shared machines only ever adds time)."""
    return min((measure(kind, paths, batch) for _ in range(repeats)), key=lambda r: r["seconds"])


def measure(kind: str, paths: list[str], batch: int = 64) -> dict:
    return measure_parallel(kind, [paths], batch)[0]


def measure_parallel(kind: str, parts: list[list[str]], batch: int = 64) -> list[dict]:
    """One subprocess per part, all at once; each one's figures plus ``wall``: the seconds until
    the last one finished (process start-up included)."""
    with tempfile.TemporaryDirectory() as out:
        lists = []
        for i, paths in enumerate(parts):
            lists.append(os.path.join(out, f"list-{i}.txt"))
            with open(lists[-1], "w") as f:
                f.write("\n".join(paths))
        started = time.perf_counter()
        workers = [subprocess.Popen([sys.executable, __file__, "--worker", kind, lst, os.path.join(out, str(i)),
                                     str(batch)], stdout=subprocess.PIPE, text=True) for i, lst in enumerate(lists)]
        outputs = [w.communicate()[0] for w in workers]
        wall = time.perf_counter() - started
        if any(w.returncode for w in workers):
            raise RuntimeError(f"a {kind} worker failed")
        return [{**json.loads(o.strip().splitlines()[-1]), "wall": wall} for o in outputs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=12000, help="number of small CNN checkpoints")
    parser.add_argument("--workdir", default=None, help="where to generate checkpoints (default: a temp dir)")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, list_file, out, batch = args.worker
        return measure_worker(kind, list_file, out, int(batch))

    from pipeline.zoo.synthetic import SMALL_CNN, bert_shapes, small_cnn_folder, write_random  # not in workers: torch

    work = args.workdir or tempfile.mkdtemp(prefix="bench-ingest-")
    small_dir, small = small_cnn_folder(work, args.small)
    small_params = sum(int(np.prod(s)) for s in SMALL_CNN.values())
    bert = os.path.join(work, "bert22m.safetensors")
    shapes = bert_shapes()
    if not os.path.exists(bert):
        write_random(bert, shapes, 0, {"activation": "gelu", "num_attention_heads": "12"})
    bert_params, bert_bytes = sum(int(np.prod(s)) for s in shapes.values()), os.path.getsize(bert)

    raw_small, conv_small = best_of("raw", small), best_of("convert", small)
    raw_bert, conv_bert = best_of("raw", [bert], 1), best_of("convert", [bert], 1)

    processes = os.cpu_count()                   # the same files split over one plain process per core
    split = min((measure_parallel("convert", [small[i::processes] for i in range(processes)], 128)
                 for _ in range(3)), key=lambda r: r[0]["wall"])
    split_rate = args.small / split[0]["wall"]

    from pipeline.ingest import IngestConfig, run_ingest
    from pipeline.ray_utils import ensure_ray
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ensure_ray(num_cpus=os.cpu_count())          # the cluster's start-up is excluded; the actors' is not
    with tempfile.TemporaryDirectory() as out:
        job = run_ingest(IngestConfig([small_dir], out))
    job_rate = args.small / job["seconds"]

    rows = [
        ("small CNN, raw read+write (1 proc)", args.small / raw_small["seconds"], small_params * args.small / raw_small["seconds"], raw_small["peak_rss"]),
        ("small CNN, conversion (1 proc)", args.small / conv_small["seconds"], small_params * args.small / conv_small["seconds"], conv_small["peak_rss"]),
        (f"small CNN, {processes} plain processes", split_rate, small_params * split_rate, split[0]["peak_rss"]),
        ("small CNN, Ray Data job (all cores)", job_rate, small_params * job_rate, float("nan")),
        ("BERT 22.7M, raw read+write", 1 / raw_bert["seconds"], bert_params / raw_bert["seconds"], raw_bert["peak_rss"]),
        ("BERT 22.7M, conversion", 1 / conv_bert["seconds"], bert_params / conv_bert["seconds"], conv_bert["peak_rss"]),
    ]
    print(f"\n{'measurement':<40}{'ckpt/s':>10}{'params/s':>14}{'peak RSS MiB':>14}")
    for name, rate, params, rss in rows:
        print(f"{name:<40}{rate:>10.1f}{params:>14.3e}{rss / 2**20:>14.0f}")
    result = {
        "small_ckpt_per_s": round(job_rate, 1),
        "small_params_per_s": round(small_params * job_rate),
        "ray_vs_two_process_ratio": round(job_rate / split_rate, 3),
        "ray_first_batch_s": job["first_batch_s"],
        "ray_steady_vs_two_process_ratio": round(job["steady_checkpoints_per_s"] / split_rate, 3),
        "split_processes": processes,
        "convert_vs_raw_ratio": round(raw_small["seconds"] / conv_small["seconds"], 3),
        "bert22m_convert_vs_raw_ratio": round(raw_bert["seconds"] / conv_bert["seconds"], 3),
        "bert22m_params": bert_params,
        "bert22m_file_mib": round(bert_bytes / 2**20, 1),
        "bert22m_convert_s": round(conv_bert["seconds"], 3),
        "bert22m_peak_rss_over_file": round(conv_bert["peak_rss_increase"] / bert_bytes, 3),
        "bert22m_peak_rss_abs_over_file": round(conv_bert["peak_rss"] / bert_bytes, 3),
        "small_convert_peak_rss_mib": round(conv_small["peak_rss"] / 2**20, 1),
    }
    print(f"\nconversion/raw: small {result['convert_vs_raw_ratio']}x, BERT {result['bert22m_convert_vs_raw_ratio']}x; "
          f"BERT peak RSS increase {result['bert22m_peak_rss_over_file']}x its file "
          f"({result['bert22m_peak_rss_abs_over_file']}x counting the interpreter and libraries)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
