"""Evaluate trained encoders and baselines side by side on the held-out split: retrieval, symmetry
robustness, clustering, accuracy prediction, transfer; writes metrics.json, report.md and PNGs.

    weightzoo evaluate --graphs data/graphs --catalog data/zoo/catalog.parquet \\
        --encoders runs/encoders/*.pt --out reports/default
"""
from __future__ import annotations

import argparse
import os
import time

import torch

from pipeline.encoders.state import load_state
from pipeline.evaluation.metrics import evaluate_encoder, precision_recall_curve
from pipeline.evaluation.report import write_report
from pipeline.evaluation.retrieval import task_labels
from pipeline.evaluation.transfer import scratch_accuracy, transfer_queries
from pipeline.ray_utils import ensure_ray
from pipeline.storage import join, read_bytes
from pipeline.training.dataset import labelled_models, labelled_table, split


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graphs", required=True, help="ingestion output folder")
    parser.add_argument("--catalog", required=True, help="the zoo's catalog.parquet")
    parser.add_argument("--encoders", nargs="+", required=True, help="state files (weightzoo train exports)")
    parser.add_argument("--out", required=True, help="report folder")
    parser.add_argument("--split-by", default="seed", choices=["seed", "hparams_key"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--address", default=None)
    args = parser.parse_args(argv)
    ensure_ray(args.address)
    torch.set_num_threads(os.cpu_count() or 1)

    models = labelled_models(args.graphs, args.catalog, args.split_by)
    test, train = labelled_table(args.graphs, split(models, "test")), labelled_table(args.graphs, split(models, "train"))
    queries = transfer_queries(test)
    scratch = scratch_accuracy(test, queries, args.seed)
    results, embeddings, curves = {}, {}, {}
    labels = task_labels(test)
    for path in args.encoders:
        started = time.perf_counter()
        model, config = load_state(path)
        name = os.path.splitext(os.path.basename(path))[0]
        head = model.metric_head if config["epochs"] > 0 else None  # epochs 0: a fitted baseline
        results[name], embeddings[name] = evaluate_encoder(model.encoder, head, test, train, queries, scratch, args.seed)
        curves[name] = precision_recall_curve(embeddings[name], labels)
        print(f"{name}: {time.perf_counter() - started:.0f}s "
              + " ".join(f"{k}={v:.3f}" for k, v in results[name].items() if k in ("p_at_1", "map", "silhouette")))
    write_report(args.out, results, embeddings, labels, curves, {
        "test split": f"{test.num_rows} models held out by {args.split_by} (training split: {train.num_rows})",
        "transfer queries": f"{len(queries)} held-out dense classification models",
        "encoders": ", ".join(results)})
    print(read_bytes(join(args.out, "report.md")).decode())
    return results


if __name__ == "__main__":
    main()
