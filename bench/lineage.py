"""Lineage benchmark: recovery time per model and edge F1 as the lineage zoo grows, against the
MoTHer baseline run in the same job; and the pair tests on one large model.

    python bench/lineage.py                 # 2 and 6 trees per base family (255 and ~750 models)
    python bench/lineage.py --trees 2 4 8 --hidden 1024

Each size grows its lineage zoo (``weightzoo make-zoo --preset lineage`` with more trees per base;
the smaller zoos' trees are the larger ones' first trees), then runs the lineage job on its
``models/`` with ``--evaluate``. Candidates are a fixed number of fingerprint neighbours per model,
so pair tests, and time per model, should stay flat as the zoo grows. Prints a table, then one
JSON line with ``seconds_per_model`` at each size and the ratio of the largest to the smallest.

The large pair: a ``transformers`` BERT of ``--hidden`` width and ``--layers`` layers (27.8M
parameters by default) against a dense fine-tune of it (every weight matrix moved) and against a
rank-4 LoRA update of it, through :func:`pipeline.lineage.evidence.pair_evidence`, with update
ranks read through a sketch (``RANK_SKETCH``) and, as the baseline in the same process, by full
singular value decompositions.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time

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


def large_pair(hidden: int, layers: int) -> dict:
    """Seconds of :func:`pair_evidence` on a BERT of ``hidden`` width and its two children, with
    ranks sketched and decomposed whole; and what each read."""
    import numpy as np
    import transformers as T

    from pipeline.checkpoint import Checkpoint
    from pipeline.graph import build_graph
    from pipeline.lineage import evidence

    model = T.BertModel(T.BertConfig(vocab_size=1000, hidden_size=hidden, num_hidden_layers=layers,
                                     num_attention_heads=8, intermediate_size=4 * hidden))
    parent = {n: t.detach().numpy().copy() for n, t in model.state_dict().items()}
    rng = np.random.default_rng(0)
    dense = {n: t + 1e-3 * rng.standard_normal(t.shape).astype(np.float32) if t.ndim >= 2 else t for n, t in parent.items()}
    lora = {n: t + 1e-3 * (rng.standard_normal((len(t), 4)) @ rng.standard_normal((4, t.shape[1]))).astype(np.float32)
            if t.ndim == 2 and n != "embeddings.word_embeddings.weight" else t for n, t in parent.items()}
    graphs = {name: build_graph(Checkpoint(name, "hf-folder", tensors, config=model.config.to_dict()))
              for name, tensors in (("parent", parent), ("dense", dense), ("lora", lora))}
    result = {"params": graphs["parent"].num_params}
    sketch = evidence.RANK_SKETCH
    evidence.pair_evidence(graphs["parent"], graphs["dense"])  # warm-up: the first call pays for page faults
    for mode, columns in (("sketch", sketch), ("full_svd", 10**9)):
        evidence.RANK_SKETCH = columns
        for child in ("dense", "lora"):
            started = time.perf_counter()
            read = evidence.pair_evidence(graphs["parent"], graphs[child])
            result[f"{child}_{mode}_s"] = time.perf_counter() - started
            result[f"{child}_{mode}_low_rank"] = read["changed_low_rank"]
    evidence.RANK_SKETCH = sketch
    return result


def main() -> None:
    import ray

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trees", type=int, nargs="+", default=[2, 6], help="trees per base family, per size")
    parser.add_argument("--hidden", type=int, default=1024, help="width of the large pair's BERT")
    parser.add_argument("--layers", type=int, default=2, help="its layers")
    parser.add_argument("--workdir", default=None, help="where to grow the zoos (default: a temp dir); "
                        "zoos already grown there are reused")
    args = parser.parse_args()
    ray.init(include_dashboard=False, log_to_driver=False)
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench-lineage-")
    results = {}
    print(f"{'trees':>6}{'models':>8}{'pairs':>8}{'pairs/model':>12}{'s/model':>10}{'MoTHer s/model':>16}"
          f"{'edge F1':>9}{'ARI':>7}{'MoTHer F1':>11}{'driver GiB':>12}")
    for trees in args.trees:
        summary = run(f"{workdir}/trees-{trees}", trees)
        m = summary["metrics"]
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        results[trees] = {"models": summary["models"], "pairs": summary["pairs_tested"],
                          "seconds_per_model": summary["seconds_per_model"],
                          "mother_seconds_per_model": m["mother_seconds_per_model"], "edge_f1": round(m["edge_f1"], 3),
                          "ari": round(m["ari"], 3),
                          "mother_edge_f1": round(m["mother_edge_f1"], 3), "driver_peak_rss_gib": round(rss, 2)}
        r = results[trees]
        print(f"{trees:>6}{r['models']:>8}{r['pairs']:>8}{r['pairs'] / r['models']:>12.2f}{r['seconds_per_model']:>10.4f}"
              f"{r['mother_seconds_per_model']:>16.4f}{r['edge_f1']:>9.3f}{r['ari']:>7.3f}{r['mother_edge_f1']:>11.3f}{rss:>12.2f}")
    big = large_pair(args.hidden, args.layers)
    print(f"\n{'large pair':<12}{'params':>12}{'sketch s':>10}{'full SVD s':>12}{'speedup':>9}{'low rank (sketch / full)':>26}")
    for child in ("dense", "lora"):
        fast, slow = big[f"{child}_sketch_s"], big[f"{child}_full_svd_s"]
        print(f"{child:<12}{big['params']:>12,}{fast:>10.2f}{slow:>12.2f}{slow / fast:>9.2f}"
              f"{str(big[f'{child}_sketch_low_rank']) + ' / ' + str(big[f'{child}_full_svd_low_rank']):>26}")
    small, large = results[min(results)], results[max(results)]
    print(json.dumps({"sizes": results, "models_ratio": round(large["models"] / small["models"], 2),
                      "seconds_per_model_ratio": round(large["seconds_per_model"] / small["seconds_per_model"], 3),
                      "edge_f1_largest": large["edge_f1"], "mother_edge_f1_largest": large["mother_edge_f1"],
                      "large_pair": {k: round(v, 3) if isinstance(v, float) else v for k, v in big.items()},
                      "large_pair_speedup_dense": round(big["dense_full_svd_s"] / big["dense_sketch_s"], 2)}))


if __name__ == "__main__":
    main()
