"""Convert checkpoints into weight-graph Parquet shards with Ray Data.

    weightzoo ingest data/zoo-tiny/models --out data/graphs-tiny
    weightzoo ingest 's3://bucket/zoo/**/*.safetensors' --out s3://bucket/graphs --precision fp16
    weightzoo ingest my_state_dicts/ --out data/graphs --activation relu   # bare state dicts

Inputs are folders, globs, files or URIs. Re-running is idempotent; a killed run restarted finishes
with the same result. Prints a summary; bad checkpoints are listed and recorded in errors.parquet.
"""
from __future__ import annotations

import argparse
import json

from pipeline.checkpoint.dtypes import STORED_PRECISIONS
from pipeline.graph.hints import add_hint_arguments, hints_from_args
from pipeline.ingest import IngestConfig, run_ingest
from pipeline.ray_utils import ensure_ray


def print_summary(summary: dict) -> None:
    print(f"\ningested into {summary['output']} in {summary['seconds']}s "
          f"({summary['checkpoints_per_s']} checkpoints/s)")
    for key in ("discovered", "skipped_unchanged", "converted", "duplicate", "error", "stored_models",
                "total_errors", "cleaned_uncommitted", "redone_lost"):
        print(f"  {key:<20}{summary[key]:>8}")
    print("  stored, by family/graph mode:")
    for key, count in summary["stored_by_family"].items():
        print(f"    {key:<26}{count:>6}")
    for path, kind, message in summary["run_errors"][:20]:
        print(f"  ! {kind}: {message}")
    if len(summary["run_errors"]) > 20:
        print(f"  ... and {len(summary['run_errors']) - 20} more in errors.parquet")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="folders, globs, checkpoint files or URIs")
    parser.add_argument("--out", required=True, help="output folder or URI")
    parser.add_argument("--precision", default="fp32", choices=sorted(STORED_PRECISIONS))
    parser.add_argument("--batch-size", type=int, default=None,
                        help="checkpoints per task (default: by their sizes, about 64 MiB a task)")
    parser.add_argument("--num-actors", type=int, default=None)
    parser.add_argument("--allow-nonfinite", action="store_true", help="store NaN/Inf weights instead of rejecting")
    parser.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS or a local Ray)")
    parser.add_argument("--json", action="store_true", help="also print the summary as one JSON line")
    add_hint_arguments(parser)
    args = parser.parse_args(argv)
    hints = hints_from_args(args, parser)
    ensure_ray(args.address)
    summary = run_ingest(IngestConfig(args.inputs, args.out, args.precision, args.batch_size, args.num_actors,
                                      check_finite=not args.allow_nonfinite, hints=hints))
    print_summary(summary)
    if args.json:
        print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
