"""Scaling benchmark: ingestion, embedding and re-basin throughput of the Ray jobs with 1 and 2 worker
CPUs, and the per-model costs that docs/scaling.md projects from.

    python bench/scaling.py                      # 6,000 Small-CNN-Zoo checkpoints, 1,500 embedded, 128 pairs
    python bench/scaling.py --small 2000 --embed 600 --pairs 24    # quicker

Each CPU count runs in a fresh process with its own local Ray of that many CPUs, on the same files,
and rates are steady-state ones, since start-up does not scale with CPUs (reported apart):
ingestion after its first batch, embedding less the time of a run of ``STARTUP_MODELS`` models,
re-basin after a warm-up run that starts the workers. The jobs: ingestion
(``run_ingest``), embedding of the stored graphs with the shipped encoder (``run_embed``, weight
fingerprints included), and re-basin weight matching of pairs of checkpoints as Ray tasks
(``run_pairs``). Prints a table, then one JSON line: ``ingest_speedup_2v1``, ``embed_speedup_2v1``,
``rebasin_speedup_2v1`` (targets at least 1.6 each) and the costs per model and CPU.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

STAGES = ("ingest", "embed", "rebasin")
#: models embedded by the run that measures embed_zoo's start-up
STARTUP_MODELS = 32


def worker(cpus: int, folder: str, embed: int, pairs: int) -> None:
    """One CPU count: the three jobs on ``folder``'s checkpoints; prints their rates as JSON."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    from pipeline.encoders.state import DEFAULT_ENCODER
    from pipeline.ingest import IngestConfig, run_ingest
    from pipeline.rebasin.fanout import Options, Pair, run_pairs
    from pipeline.search import run_embed

    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    files = sorted(glob.glob(os.path.join(folder, "*.safetensors")))
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        ingested = run_ingest(IngestConfig([folder], os.path.join(out, "graphs")))
        ingest_s = time.perf_counter() - started
        started = time.perf_counter()  # start-up: a run of a few models (fresh actors, as every run)
        run_embed(os.path.join(out, "graphs"), DEFAULT_ENCODER, os.path.join(out, "few"), limit=STARTUP_MODELS)
        embed_startup_s = time.perf_counter() - started
        started = time.perf_counter()
        embedded = run_embed(os.path.join(out, "graphs"), DEFAULT_ENCODER, os.path.join(out, "index"), limit=embed)
        embed_s = time.perf_counter() - started
    every = [Pair(files[2 * i], files[2 * i + 1]) for i in range(pairs + 2 * cpus)]
    run_pairs(every[:2 * cpus], Options(restarts=1))  # the workers started and warm
    started = time.perf_counter()
    table = run_pairs(every[2 * cpus:], Options(restarts=1), pairs_per_task=4)
    rebasin_s = time.perf_counter() - started
    assert not any(table.column("error").to_pylist()), "a pair failed"
    steady_embed = (embedded["embedded_now"] - STARTUP_MODELS) / max(embed_s - embed_startup_s, 1e-9)
    print(json.dumps({"ingest_per_s": ingested["steady_checkpoints_per_s"], "embed_per_s": steady_embed,
                      "rebasin_pairs_per_s": pairs / rebasin_s, "ingest_s": ingest_s, "embed_s": embed_s,
                      "rebasin_s": rebasin_s, "ingest_first_batch_s": ingested["first_batch_s"],
                      "embed_startup_s": embed_startup_s,
                      "ingest_overall_per_s": ingested["converted"] / ingest_s,
                      "embed_overall_per_s": embedded["embedded_now"] / embed_s}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=6000, help="Small-CNN-Zoo checkpoints to ingest")
    parser.add_argument("--embed", type=int, default=1500, help="how many of them to embed")
    parser.add_argument("--pairs", type=int, default=128, help="pairs to align")
    parser.add_argument("--workdir", default=None, help="where to generate the checkpoints (default: a temp dir)")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        cpus, folder, embed, pairs = args.worker
        return worker(int(cpus), folder, int(embed), int(pairs))

    from pipeline.zoo.synthetic import small_cnn_folder

    folder, _ = small_cnn_folder(args.workdir or tempfile.mkdtemp(prefix="bench-scaling-"), args.small)
    runs = {}
    for cpus in (1, 2):
        result = subprocess.run([sys.executable, __file__, "--worker", str(cpus), folder, str(args.embed),
                                 str(args.pairs)], check=True, capture_output=True, text=True)
        runs[cpus] = json.loads(result.stdout.strip().splitlines()[-1])

    keys = {"ingest": "ingest_per_s", "embed": "embed_per_s", "rebasin": "rebasin_pairs_per_s"}
    print(f"\n{'stage':<10}{'1 CPU /s':>12}{'2 CPUs /s':>12}{'speedup':>10}{'CPU-s per item':>16}")
    result = {}
    for stage in STAGES:
        one, two = runs[1][keys[stage]], runs[2][keys[stage]]
        result[f"{stage}_speedup_2v1"] = round(two / one, 3)
        result[f"{stage}_per_s_1cpu"], result[f"{stage}_per_s_2cpu"] = round(one, 1), round(two, 1)
        result[f"{stage}_cpu_seconds_per_item"] = round(1 / one, 6)
        print(f"{stage:<10}{one:>12.1f}{two:>12.1f}{two / one:>10.2f}{1 / one:>16.5f}")
    result.update(small=args.small, embedded=args.embed, pairs=args.pairs,
                  **{f"{key}_{cpus}cpu": round(runs[cpus][key], 2) for cpus in (1, 2)
                     for key in ("ingest_first_batch_s", "embed_startup_s", "ingest_overall_per_s",
                                 "embed_overall_per_s")})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
