"""Recover which model was derived from which, and how, from weights alone (and score it).

    weightzoo lineage data/zoo-lineage/models --out data/lineage
    weightzoo lineage data/zoo-lineage/models --out data/lineage --evaluate data/zoo-lineage/catalog.parquet
    weightzoo lineage --out data/lineage --model wine-mlp-lineage-relu-00000-04-lora     # its ancestors and descendants

Writes ``<out>/lineage.parquet`` (parent, child, type, confidence, evidence), ``<out>/mother.parquet``
(the MoTHer baseline's forest), ``<out>/errors.parquet`` (files that could not be read, with the
reason), ``<out>/lineage.png`` and, with ``--evaluate``, ``<out>/metrics.json`` (ours and MoTHer's,
plain and symmetry-transformed edges).
"""
from __future__ import annotations

import argparse
import json

from pipeline.lineage.job import Lineage, run_lineage
from pipeline.ray_utils import ensure_ray
from pipeline.storage import join, read_parquet


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="*", help="checkpoints (folders, globs, URIs)")
    parser.add_argument("--out", required=True, help="output folder or URI")
    parser.add_argument("--evaluate", default=None, metavar="CATALOG", help="a lineage zoo's catalog.parquet to score against")
    parser.add_argument("--model", default=None, help="print this model's ancestors and descendants from <out>")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--baseline", action="store_true",
                        help="also run the MoTHer baseline (mother.parquet; always with --evaluate; all pairs: O(models^2))")
    parser.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS or a local Ray)")
    args = parser.parse_args(argv)
    if args.model:
        result = Lineage(read_parquet(join(args.out, "lineage.parquet"))).of(args.model)
        print(json.dumps(result, indent=1))
        return result
    if not args.checkpoints:
        parser.error("give checkpoints, or --model to query a finished run")
    ensure_ray(args.address)
    summary = run_lineage(args.checkpoints, args.out, args.evaluate, plot=not args.no_plot,
                          baseline=True if args.baseline else None)
    metrics = summary.get("metrics")
    print(json.dumps({k: v for k, v in summary.items() if k != "metrics"}))
    if metrics:
        print(f"\n{'':<22}{'edge F1':>9}{'plain':>8}{'transf.':>9}{'direction':>11}{'type':>7}{'ARI':>7}")
        for name, s in (("ours", metrics["ours"]), ("MoTHer (baseline)", metrics["mother"])):
            print(f"{name:<22}{s['f1']:>9.3f}{s['plain']['f1']:>8.3f}{s['transformed']['f1']:>9.3f}"
                  f"{s['direction_acc']:>11.3f}{s['type_acc']:>7.3f}{s['ari']:>7.3f}")
        print(json.dumps({k: v for k, v in metrics.items() if k not in ("ours", "mother")}))
    return summary


if __name__ == "__main__":
    main()
