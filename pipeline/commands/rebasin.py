"""Align many pairs of models by weight matching (re-basin), one Ray task per pair, and compare the
naive and re-basin interpolation barriers.

    weightzoo align --zoo data/zoo-default --pairs 20 --out data/rebasin           # 20 random same-task pairs per family
    weightzoo align --zoo data/zoo-tiny --anchor digits-cnn-00000 --out data/rebasin-anchor
    weightzoo align --pair a.safetensors b.safetensors --pair m1 m2 --zoo data/zoo-tiny --out data/rb

Writes ``<out>/results.parquet`` (pair, family, objective, barrier naive/re-basin, time, error), and
on request aligned checkpoints (``--save-aligned``), merged ones (``--merge-alpha``) and PNG curves
(``--plots``). A failing pair is recorded in its row; the others go on. Prints a per-family summary.
"""
from __future__ import annotations

import argparse
import json

from pipeline.graph.hints import add_hint_arguments, hints_from_args
from pipeline.ray_utils import ensure_ray
from pipeline.rebasin.fanout import (Options, anchor_pairs, given_pairs, random_pairs, run_pairs, summarize,
                                     write_results)
from pipeline.rebasin.matching import RESTART_BUDGET
from pipeline.storage import join, read_parquet


def read_catalog(zoo: str):
    return read_parquet(join(zoo, "catalog.parquet"))


def print_summary(table, summary: list[dict], path: str) -> None:
    print(f"\n{table.num_rows} pairs -> {path}")
    print(f"{'family':<13}{'pairs':>6}{'errors':>7}{'barrier naive':>15}{'barrier rebasin':>17}{'(medians)':>18}"
          f"{'cos naive':>11}{'cos aligned':>13}{'match s':>9}")
    for s in summary:
        print(f"{s['family']:<13}{s['pairs']:>6}{s['errors']:>7}{s['barrier_naive']:>15.4f}{s['barrier_rebasin']:>17.4f}"
              f"{s['barrier_naive_median']:>9.4f}/{s['barrier_rebasin_median']:.4f}"
              f"{s['similarity_naive']:>11.3f}{s['similarity_rebasin']:>13.3f}{s['match_seconds']:>9.3f}")
    for row in table.filter(table["error"].is_valid()).to_pylist()[:20]:
        print(f"  ! {row['pair']}: {row['error']}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zoo", default="", help="zoo folder with catalog.parquet (needed for --anchor/--pairs)")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--anchor", help="model id: align every same-task, same-architecture model to it")
    mode.add_argument("--pairs", type=int, help="this many random same-task pairs per family")
    mode.add_argument("--pair", nargs=2, action="append", metavar=("A", "B"), help="align B to A (ids or paths)")
    parser.add_argument("--out", required=True, help="output folder or URI")
    parser.add_argument("--restarts", type=int, default=3, help="at most this many starts per pair")
    parser.add_argument("--restart-budget", type=float, default=RESTART_BUDGET,
                        help="starts after the first only while the assignment work (n^3 per n x n LAP) is "
                             "within this (default: one 512 x 512 LAP; inf: all --restarts)")
    parser.add_argument("--seed", type=int, default=0, help="for --pairs")
    parser.add_argument("--save-aligned", action="store_true", help="write aligned B checkpoints")
    parser.add_argument("--merge-alpha", type=float, default=None, help="write merged checkpoints at this alpha")
    parser.add_argument("--plots", action="store_true", help="write PNG interpolation curves")
    parser.add_argument("--rescale", action="store_true",
                        help="give aligned B A's per-neuron ReLU scales (default: B keeps its own; only the "
                             "found permutations and signs are applied, the better interpolation end measured)")
    parser.add_argument("--pairs-per-task", type=int, default=1, help="pairs per Ray task (small models: more)")
    parser.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS or a local Ray)")
    parser.add_argument("--json", action="store_true", help="also print the summary as one JSON line")
    add_hint_arguments(parser)
    args = parser.parse_args(argv)
    hints = hints_from_args(args, parser)

    catalog = read_catalog(args.zoo) if args.zoo else None
    if args.pair:
        pairs = given_pairs([tuple(p) for p in args.pair], catalog, args.zoo)
    elif catalog is None:
        parser.error("--anchor and --pairs need --zoo")
    elif args.anchor:
        pairs = anchor_pairs(catalog, args.zoo, args.anchor)
    else:
        pairs = random_pairs(catalog, args.zoo, args.pairs, args.seed)
    ensure_ray(args.address)
    options = Options(args.restarts, args.out, args.save_aligned, args.merge_alpha, args.plots, args.rescale,
                      args.restart_budget, hints)
    table = run_pairs(pairs, options, args.pairs_per_task)
    path = write_results(table, args.out)
    summary = summarize(table)
    print_summary(table, summary, path)
    if args.json:
        print(json.dumps(summary))
    return {"results": path, "summary": summary, "table": table}


if __name__ == "__main__":
    main()
