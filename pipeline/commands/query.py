"""Query an indexed zoo: nearest models to an indexed model or to a checkpoint file, with metadata
filters; or list near-duplicate groups.

    weightzoo search new_model.safetensors --index my-index         # after: weightzoo index my-checkpoints/ --out my-index
    weightzoo search moons-mlp-00003 --index data/index --graphs data/graphs --catalog data/zoo/catalog.parquet \\
        --k 5 --family mlp
    weightzoo duplicates --index my-index --report duplicates.md

The query is an indexed model (content id, model id or file name) or a checkpoint file (embedded by
``--encoder-state``, default the shipped encoder: the index's encoder must be the same). ``--graphs``
defaults to ``<index>/graphs``, where ``weightzoo index`` puts them.
"""
from __future__ import annotations

import argparse
import json

from pipeline.encoders.state import DEFAULT_ENCODER
from pipeline.graph.hints import add_hint_arguments, hints_from_args
from pipeline.search import DuplicateThresholds, Filters, UnknownFilterValue, ZooSearch
from pipeline.storage import exists, join, write_file


def print_results(results: list[dict]) -> None:
    print(f"{'score':>7}  {'model':<34}{'task':<15}{'family':<12}{'params':>9}{'test metric':>13}")
    for r in results:
        metric = r.get("test_metric")
        print(f"{r['score']:>7.4f}  {r.get('model_id', r['content_id'][:16]):<34}{r.get('task') or '-':<15}"
              f"{r.get('family') or '-':<12}{r.get('num_params', 0):>9}{'' if metric is None else f'{metric:.3f}':>13}")


def duplicates_report(groups: list[dict]) -> str:
    lines = [f"# Near-duplicate groups: {len(groups)}", ""]
    for k, g in enumerate(groups, 1):
        lines.append(f"## group {k}: {len(g['members'])} models")
        lines += [f"- {m.get('model_id')} ({m.get('family')}, {m.get('task')}, {m.get('file')})" for m in g["models"]]
        for p in g["pairs"]:
            outputs = "not run" if p["output_distance"] is None else f"{p['output_distance']:.2e}"
            lines.append(f"  - pair cosine {p['cosine']:.6f}, fingerprint distance {p['distance']:.2e}, "
                         f"wiring distance {p['wiring_distance']:.2e}, output distance {outputs}")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("query", nargs="?", help="an indexed model (id or file name) or a checkpoint file")
    parser.add_argument("--index", required=True, help="weightzoo index's output folder")
    parser.add_argument("--graphs", default=None, help="ingestion output folder (default: <index>/graphs)")
    parser.add_argument("--catalog", default=None, help="zoo catalog.parquet (task labels)")
    parser.add_argument("--encoder-state", default=DEFAULT_ENCODER,
                        help="encoder state file, for a checkpoint file (default: the shipped encoder)")
    what.add_argument("--id", help="content id, model id or file name of an indexed model")
    what.add_argument("--file", help="a checkpoint file")
    what.add_argument("--near-duplicates", action="store_true")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--task"), parser.add_argument("--family")
    parser.add_argument("--min-params", type=int), parser.add_argument("--max-params", type=int)
    defaults = DuplicateThresholds()
    parser.add_argument("--min-cosine", type=float, default=defaults.min_cosine, help="embedding cosine for duplicates")
    parser.add_argument("--max-distance", type=float, default=defaults.max_distance,
                        help="fingerprint distance for duplicates")
    parser.add_argument("--max-wiring-distance", type=float, default=defaults.max_wiring_distance,
                        help="wiring fingerprint distance for duplicates")
    parser.add_argument("--max-output-distance", type=float, default=defaults.max_output_distance,
                        help="distance of the outputs at the probe inputs for duplicates (where both run)")
    parser.add_argument("--report", default=None, help="write the near-duplicate report (markdown) here")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    add_hint_arguments(parser, family_flag="--file-family")  # for --file
    args = parser.parse_args(argv)
    hints = hints_from_args(args, parser)

    if args.query is not None:  # a checkpoint on disk (file or folder), else an indexed model's name
        args.file, args.id = (args.query, None) if exists(args.query) else (None, args.query)
    search = ZooSearch(args.index, args.graphs or join(args.index, "graphs"), args.catalog, args.encoder_state)
    if args.near_duplicates:
        groups = search.near_duplicates(DuplicateThresholds(args.min_cosine, args.max_distance,
                                                            args.max_wiring_distance, args.max_output_distance))
        text = duplicates_report(groups)
        if args.report:
            write_file(args.report, text)
        print(json.dumps(groups, default=str) if args.json else text)
        return groups
    filters = Filters(args.task, args.family, args.min_params, args.max_params)
    try:
        results = (search.by_id(args.id, args.k, filters) if args.id
                   else search.by_file(args.file, args.k, filters, hints))
    except (KeyError, UnknownFilterValue) as exc:  # an unknown model or filter value: say what exists
        parser.error(exc.args[0])
    if args.json:
        print(json.dumps(results))
    else:
        print_results(results)
    return results


if __name__ == "__main__":
    main()
