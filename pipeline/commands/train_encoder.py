"""Train weight encoders contrastively with Ray Train and report test-split retrieval.

    weightzoo train --graphs data/graphs --catalog data/zoo/catalog.parquet --encoder scale_gmn
    weightzoo train ... --compare            # every encoder and both baselines, side by side
    weightzoo train ... --encoder scale_gmn pca weight_transformer   # some, in this order
    weightzoo train ... --num-workers 4 --use-gpu   # on a GPU cluster: only flags change

A run restarted with the same --run-name and --out resumes from its last checkpoint.
"""
from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict

import pyarrow as pa
import torch

from pipeline.constants import EMBEDDING_DIM
from pipeline.encoders import ENCODERS, build_encoder, prepare
from pipeline.encoders.probes import ProbeInputs, load_probe_inputs
from pipeline.encoders.state import EncoderWithHead, save_state
from pipeline.evaluation import evaluate_retrieval
from pipeline.graph.rows import records_to_graphs
from pipeline.ray_utils import ensure_ray
from pipeline.storage import join, write_file
from pipeline.training import TrainConfig, fit_encoder, load_training_state, refit_metric_head
from pipeline.training.dataset import labelled_models, labelled_table, split


def run_one(name: str, args, models: pa.Table, tables: dict[str, pa.Table]) -> dict:
    """Train (or fit) one encoder, export it, and return its test-split metrics. ``tables``: the
    train, val and test model rows (read once for every encoder)."""
    exported = join(args.out, "encoders", f"{name}.pt")
    if name == "pca":
        encoder = build_encoder("pca", dim=args.dim).fit([prepare(g) for g in records_to_graphs(tables["train"])])
        save_state(EncoderWithHead(encoder, args.dim),
                   asdict(TrainConfig(encoder="pca", encoder_kwargs={"dim": args.dim}, epochs=0)), exported)
    else:
        config = TrainConfig(encoder=name, encoder_kwargs={"dim": args.dim}, epochs=args.epochs,
                             batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                             temperature=args.temperature, metric_weight=args.metric_weight,
                             low_performer_percentile=args.low_performer_percentile,
                             probe_inputs=args.probe_inputs if not args.probe_inputs or "://" in args.probe_inputs
                             else os.path.abspath(args.probe_inputs))
        result = fit_encoder(args.graphs, models, config, args.out, f"{args.run_name}-{name}",
                             args.num_workers, args.use_gpu, args.cpus_per_worker)
        best = result.get_best_checkpoint("val_map", "max") or result.checkpoint
        with best.as_directory() as folder:
            model, config = load_training_state(folder)
        before, after = refit_metric_head(model, tables["train"], tables["val"], config)
        print(f"{name}: metric head refit on clean training embeddings, validation MSE {before:.3f} -> {after:.3f}")
        save_state(model, asdict(config), exported)  # the encoder and its head, without the optimizer's state
        encoder = model.encoder
    return evaluate_retrieval(encoder, tables["test"])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graphs", required=True, help="ingestion output folder (shards + manifest)")
    parser.add_argument("--catalog", required=True, help="the zoo's catalog.parquet")
    parser.add_argument("--encoder", default=["scale_gmn"], nargs="+", choices=sorted(ENCODERS),
                        help="one or more encoders, trained one after the other and reported side by side")
    parser.add_argument("--compare", action="store_true", help="train and report every encoder")
    parser.add_argument("--split-by", default="seed", choices=["seed", "hparams_key"])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--dim", type=int, default=EMBEDDING_DIM)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--temperature", type=float, default=0.07, help="InfoNCE temperature")
    parser.add_argument("--metric-weight", type=float, default=0.8, help="weight of the metric head's loss")
    parser.add_argument("--low-performer-percentile", type=float, default=10.0,
                        help="models below this percentile of their task's metric are its negatives (0: none)")
    parser.add_argument("--probe-inputs", default=None,
                        help="the zoo's probe_inputs.npz (path or URI): unlabeled inputs the probing encoders run each "
                             "network on instead of synthetic ones (kept in the exported encoder)")
    parser.add_argument("--out", default="runs")
    parser.add_argument("--run-name", default="encoder")
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--cpus-per-worker", type=float, default=1.0)
    parser.add_argument("--use-gpu", action="store_true")
    parser.add_argument("--address", default=None)
    args = parser.parse_args(argv)
    if args.probe_inputs:  # a bad file fails here, not in every training worker
        try:
            ProbeInputs().set(load_probe_inputs(args.probe_inputs))
        except (OSError, ValueError) as error:
            parser.error(f"--probe-inputs: {error}")
    ensure_ray(args.address)
    torch.set_num_threads(os.cpu_count() or 1)

    models = labelled_models(args.graphs, args.catalog, args.split_by)
    tables = {s: labelled_table(args.graphs, split(models, s)) for s in ("train", "val", "test")}
    names = sorted(ENCODERS) if args.compare else args.encoder
    report = {}
    for name in names:  # the report is rewritten after each encoder: a long comparison shows progress
        report[name] = run_one(name, args, models, tables)
        write_file(join(args.out, f"{args.run_name}-report.json"), json.dumps(report, indent=2))
    print(f"\ntest split ({tables['test'].num_rows} models, split by {args.split_by}; relevant = same task and data set)")
    print(f"{'encoder':<20}{'P@1':>8}{'P@5':>8}{'P@10':>8}{'mAP':>8}{'broken-copy cos':>17}{'broken-copy top1':>18}")
    for name, m in report.items():
        print(f"{name:<20}{m['p_at_1']:>8.3f}{m['p_at_5']:>8.3f}{m['p_at_10']:>8.3f}{m['map']:>8.3f}"
              f"{m['broken_copy_cos']:>17.4f}{m['broken_copy_top1']:>18.3f}")
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
