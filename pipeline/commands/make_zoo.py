"""Train the labelled model zoo as Ray tasks.

    weightzoo make-zoo --out data/zoo-tiny --preset tiny
    weightzoo make-zoo --out data/zoo-lineage --preset lineage       # model trees with their ground truth
    ray job submit --working-dir . -- weightzoo make-zoo --out s3://bucket/zoo --preset default
"""
from __future__ import annotations

import argparse
import time

from pipeline.ray_utils import ensure_ray
from pipeline.zoo.build import make_zoo
from pipeline.zoo.presets import LINEAGE_PRESET, PRESETS


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder or URI")
    parser.add_argument("--preset", default="tiny", choices=sorted([*PRESETS, LINEAGE_PRESET]))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--copies", type=int, default=None,
                        help="near-duplicate copies to plant (default: the preset's, 60 for default)")
    parser.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS or a local Ray)")
    args = parser.parse_args(argv)
    ensure_ray(args.address)
    started = time.perf_counter()
    catalog = make_zoo(args.out, args.preset, args.seed, copies=args.copies)
    by_cell = catalog.group_by(["task", "family"]).aggregate([("test_metric", "mean"), ("model_id", "count")])
    planted = sum(1 for d in catalog.column("duplicate_of").to_pylist() if d) if "duplicate_of" in catalog.schema.names else 0
    print(f"\n{catalog.num_rows} models ({planted} planted near-duplicate copies) in {time.perf_counter() - started:.1f}s -> {args.out}")
    print(f"{'task':<14}{'family':<13}{'models':>7}{'mean test metric':>18}")
    for r in sorted(by_cell.to_pylist(), key=lambda r: (r["task"], r["family"])):
        print(f"{r['task']:<14}{r['family']:<13}{r['model_id_count']:>7}{r['test_metric_mean']:>18.3f}")


if __name__ == "__main__":
    main()
