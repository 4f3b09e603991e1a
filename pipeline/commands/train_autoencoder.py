"""Train the canonicalization autoencoder (the second seed) on one target architecture of the zoo,
under Ray Train.

    weightzoo train-autoencoder --graphs data/graphs --catalog data/zoo/catalog.parquet --family inr
    weightzoo train-autoencoder ... --family cnn --activation tanh --latent 256
    weightzoo train-autoencoder ... --encoder neural_graphs       # the permutation-only ablation
    weightzoo train-autoencoder ... --num-workers 4 --use-gpu     # on a GPU cluster: only flags change

The target architecture is that of the first catalog model of the family (and activation, and task
for tabular MLPs); only models of exactly that architecture are used. Writes
``<out>/autoencoders/<run-name>.pt`` (the best epoch by validation loss) and ``<run-name>-report.json``.
A run restarted with the same --run-name and --out resumes from its last checkpoint.
"""
from __future__ import annotations

import argparse
import json
import os

import torch

from pipeline.autoencoder import target_of
from pipeline.autoencoder.trainer import (AutoencoderConfig, fit_autoencoder, load_autoencoder, save_autoencoder,
                                          target_config)
from pipeline.ray_utils import ensure_ray
from pipeline.storage import join, read_parquet, write_file
from pipeline.training.dataset import labelled_models

DEFAULT_ACTIVATION = {"inr": "sine", "cnn": "relu", "mlp": "relu"}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graphs", required=True, help="ingestion output folder (shards + manifest)")
    parser.add_argument("--catalog", required=True, help="the zoo's catalog.parquet")
    parser.add_argument("--family", required=True, choices=sorted(DEFAULT_ACTIVATION))
    parser.add_argument("--activation", default=None, help="default: sine for inr, relu otherwise")
    parser.add_argument("--task", default=None, help="for mlp: the task whose MLP architecture is the target")
    parser.add_argument("--encoder", default="scale_gmn", choices=["scale_gmn", "neural_graphs"])
    parser.add_argument("--latent", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup-steps", type=int, default=1000)
    parser.add_argument("--split-by", default="seed", choices=["seed", "hparams_key"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs")
    parser.add_argument("--run-name", default=None, help="default: ae-<family>-<activation>-<encoder>")
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--cpus-per-worker", type=float, default=1.0)
    parser.add_argument("--use-gpu", action="store_true")
    parser.add_argument("--address", default=None)
    args = parser.parse_args(argv)
    activation = args.activation or DEFAULT_ACTIVATION[args.family]
    rows = [r for r in read_parquet(args.catalog).to_pylist() if r["family"] == args.family
            and r["activation"] == activation and (args.task is None or r["task"] == args.task)
            and not r.get("duplicate_of")]
    if not rows:
        parser.error(f"no {args.family} models with {activation} activations in {args.catalog}")
    target = target_of(rows[0])
    run_name = args.run_name or f"ae-{target.name}-{args.encoder}"
    ensure_ray(args.address)
    torch.set_num_threads(os.cpu_count() or 1)

    config = AutoencoderConfig(target=target_config(target), encoder=args.encoder, latent=args.latent,
                               epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                               warmup_steps=args.warmup_steps, seed=args.seed)
    models = labelled_models(args.graphs, args.catalog, args.split_by)
    result = fit_autoencoder(args.graphs, models, config, args.out, run_name, args.num_workers, args.use_gpu,
                             args.cpus_per_worker)
    best = result.get_best_checkpoint("val_loss", "min") or result.checkpoint
    model, config = load_autoencoder(best.path)
    exported = join(args.out, "autoencoders", f"{run_name}.pt")
    save_autoencoder(model, config, exported)
    report = {"target": target.name, "num_params": target.num_params, "encoder": args.encoder,
              "exported": exported, **{k: v for k, v in result.metrics.items() if k.startswith(("val_", "loss", "epoch"))}}
    write_file(join(args.out, f"{run_name}-report.json"), json.dumps(report, indent=2))
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
