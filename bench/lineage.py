"""Lineage benchmark: recovery time per model and edge F1 as the lineage zoo grows, against the
MoTHer baseline run in the same job.

    python bench/lineage.py                 # 2 and 6 trees per base family (255 and ~760 models)
    python bench/lineage.py --trees 2 4 8

Each size grows its lineage zoo (``weightzoo make-zoo --preset lineage`` with more trees per base;
the smaller zoos' trees are the larger ones' first trees), then runs the lineage job on its
``models/`` with ``--evaluate``. Candidates are a fixed number of fingerprint neighbours per model,
so pair tests, and time per model, should stay flat as the zoo grows. Prints a table, then one
JSON line with ``seconds_per_model`` at each size and the ratio of the largest to the smallest.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile

import pyarrow as pa
import pyarrow.parquet as pq


def run(folder: str, trees: int) -> dict:
    """Grow ``trees`` trees per base into ``folder`` (unless its catalog is there from an earlier
    run) and recover them; the job's summary and metrics."""
    from pipeline.lineage.job import run_lineage
    from pipeline.zoo.lineage import lineage_catalog_rows

    if not os.path.exists(f"{folder}/catalog.parquet"):
        rows = lineage_catalog_rows(folder, seed=0, trees=trees)
        pq.write_table(pa.Table.from_pylist(rows), f"{folder}/catalog.parquet")
    return run_lineage([f"{folder}/models"], f"{folder}/lineage", f"{folder}/catalog.parquet", plot=False)


def main() -> None:
    import ray

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trees", type=int, nargs="+", default=[2, 6], help="trees per base family, per size")
    parser.add_argument("--workdir", default=None, help="where to grow the zoos (default: a temp dir); "
                        "zoos already grown there are reused")
    args = parser.parse_args()
    ray.init(include_dashboard=False, log_to_driver=False)
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench-lineage-")
    results = {}
    print(f"{'trees':>6}{'models':>8}{'pairs':>8}{'pairs/model':>12}{'s/model':>10}{'MoTHer s/model':>16}"
          f"{'edge F1':>9}{'MoTHer F1':>11}{'driver GiB':>12}")
    for trees in args.trees:
        summary = run(f"{workdir}/trees-{trees}", trees)
        m = summary["metrics"]
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        results[trees] = {"models": summary["models"], "pairs": summary["pairs_tested"],
                          "seconds_per_model": summary["seconds_per_model"],
                          "mother_seconds_per_model": m["mother_seconds_per_model"], "edge_f1": round(m["edge_f1"], 3),
                          "mother_edge_f1": round(m["mother_edge_f1"], 3), "driver_peak_rss_gib": round(rss, 2)}
        r = results[trees]
        print(f"{trees:>6}{r['models']:>8}{r['pairs']:>8}{r['pairs'] / r['models']:>12.2f}{r['seconds_per_model']:>10.4f}"
              f"{r['mother_seconds_per_model']:>16.4f}{r['edge_f1']:>9.3f}{r['mother_edge_f1']:>11.3f}{rss:>12.2f}")
    small, large = results[min(results)], results[max(results)]
    print(json.dumps({"sizes": results, "models_ratio": round(large["models"] / small["models"], 2),
                      "seconds_per_model_ratio": round(large["seconds_per_model"] / small["seconds_per_model"], 3),
                      "edge_f1_largest": large["edge_f1"], "mother_edge_f1_largest": large["mother_edge_f1"]}))


if __name__ == "__main__":
    main()
