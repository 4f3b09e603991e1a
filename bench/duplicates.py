"""Near-duplicate benchmark: on an ingested zoo with planted copies, how many planted copies are
found, how many groups are false, and how many *broken* copies of held-out models (one hidden
layer's rows permuted without the next layer's columns: a different function with the same
singular values) would be called duplicates of their originals, with the three weight checks alone
and with the output check. With ``--hf``, also every breakable layer of the tiny ``transformers``
models of :mod:`pipeline.zoo.hf_tiny`, one broken copy each.

    python bench/duplicates.py --zoo data/zoo --graphs data/graphs --encoder-state runs/encoders/scale_gmn.pt [--hf]

The index is built here (embed_zoo into a temporary folder). Prints a table by family, then one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from dataclasses import replace

import numpy as np


def broken_copy_evidence(graphs_dir: str, catalog: str, state: str, seed: int = 0) -> list[dict]:
    """For every held-out (test-split) trained model with a layer to break: its family and the
    :func:`pair_evidence` of it and its broken copy."""
    from pipeline.encoders import probe_inputs_of
    from pipeline.encoders.state import load_trained
    from pipeline.graph.rows import records_to_graphs
    from pipeline.search.duplicates import model_prints, pair_evidence
    from pipeline.symmetry import uncoupled_permutation
    from pipeline.training.dataset import labelled_models, labelled_table, split

    encoder = load_trained(state).encoder
    probes = probe_inputs_of(encoder)
    rng = np.random.default_rng(seed)
    rows = []
    for graph in records_to_graphs(labelled_table(graphs_dir, split(labelled_models(graphs_dir, catalog), "test"))):
        tensors = uncoupled_permutation(graph, rng)
        if tensors is None:
            continue
        original, broken = model_prints([graph, graph.with_tensors(tensors)], encoder, probes)
        group = "perm" if original.symmetry == "unknown" else original.symmetry
        rows.append({"family": graph.family, **pair_evidence(original, broken, group)})
    return rows


def hf_broken_copies(state: str) -> dict[str, tuple[int, int]]:
    """Per tiny ``transformers`` model (:mod:`pipeline.zoo.hf_tiny`): ``(broken copies passing
    every check, broken copies)``, one per breakable layer (:func:`pipeline.symmetry.breakable_groups`)."""
    import tempfile as tmp

    from pipeline.checkpoint import open_checkpoint
    from pipeline.encoders import probe_inputs_of
    from pipeline.encoders.state import load_trained
    from pipeline.graph import build_graph
    from pipeline.search.duplicates import DuplicateThresholds, model_prints, pair_evidence
    from pipeline.symmetry import breakable_groups, uncoupled_permutation
    from pipeline.zoo.hf_tiny import tiny_models

    encoder = load_trained(state).encoder
    probes, thresholds, out = probe_inputs_of(encoder), DuplicateThresholds(), {}
    for name, (model, _) in tiny_models().items():
        with tmp.TemporaryDirectory() as folder:
            model.save_pretrained(folder)
            graph = build_graph(open_checkpoint(folder))
            original = model_prints([graph], encoder, probes)[0]
            group = "perm" if original.symmetry == "unknown" else original.symmetry
            passing = total = 0
            rng = np.random.default_rng(0)
            for index in breakable_groups(graph):
                broken = model_prints([graph.with_tensors(uncoupled_permutation(graph, rng, group=index))],
                                      encoder, probes)[0]
                passing += thresholds.accept(pair_evidence(original, broken, group))
                total += 1
            out[name] = (passing, total)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zoo", required=True, help="zoo folder (catalog.parquet with duplicate_of)")
    parser.add_argument("--graphs", required=True, help="its ingestion output")
    parser.add_argument("--encoder-state", required=True)
    parser.add_argument("--hf", action="store_true",
                        help="also break every layer of the tiny transformers models (needs the bench extra)")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import torch

    from pipeline.ray_utils import ensure_ray
    from pipeline.search import DuplicateThresholds, ZooSearch, run_embed
    from pipeline.storage import join, read_parquet

    torch.set_num_threads(os.cpu_count() or 1)
    ensure_ray()
    catalog = join(args.zoo, "catalog.parquet")
    planted = {tuple(sorted((r["model_id"], r["duplicate_of"]))) for r in read_parquet(catalog).to_pylist()
               if r["duplicate_of"]}
    thresholds = DuplicateThresholds()
    weights_only = replace(thresholds, max_output_distance=np.inf)
    with tempfile.TemporaryDirectory() as folder:
        run_embed(args.graphs, args.encoder_state, folder)
        search = ZooSearch(folder, args.graphs, catalog)
        results = {}
        for name, t in (("weights", weights_only), ("weights+outputs", thresholds)):
            groups = search.near_duplicates(t)
            pairs = {tuple(sorted(m["model_id"] for m in g["models"])) for g in groups if len(g["models"]) == 2}
            distances = [p["output_distance"] for g in groups for p in g["pairs"]
                         if tuple(sorted(m["model_id"] for m in g["models"])) in planted
                         and p["output_distance"] is not None]
            results[name] = {"planted_found": len(planted & pairs),
                             "false_groups": sum(1 for g in groups
                                                 if tuple(sorted(m["model_id"] for m in g["models"])) not in planted),
                             "planted_max_output_distance": max(distances, default=None)}
    evidence = broken_copy_evidence(args.graphs, catalog, args.encoder_state)
    families = sorted({e["family"] for e in evidence})
    print(f"planted copies: {len(planted)}")
    for name, r in results.items():
        print(f"  checks {name:<16} found {r['planted_found']:>3}  false groups {r['false_groups']}  "
              f"largest output distance of a found copy {r['planted_max_output_distance']}")
    print(f"\nbroken copies of {len(evidence)} held-out models passing every check")
    print(f"{'family':<13}{'models':>7}{'weights':>9}{'+outputs':>10}{'run':>6}")
    for family in families + ["all"]:
        rows = [e for e in evidence if family in ("all", e["family"])]
        print(f"{family:<13}{len(rows):>7}{sum(weights_only.accept(e) for e in rows):>9}"
              f"{sum(thresholds.accept(e) for e in rows):>10}{sum(e['output_distance'] is not None for e in rows):>6}")
    copies = [e for e in evidence if e["output_distance"] is not None]
    hf = hf_broken_copies(args.encoder_state) if args.hf else {}
    if hf:
        print("\nbroken copies of tiny transformers models passing every check (one per breakable layer)")
        for name, (passing, total) in hf.items():
            print(f"  {name:<16}{passing:>4} of {total}")
    print(json.dumps({
        "planted": len(planted),
        "planted_found": results["weights+outputs"]["planted_found"],
        "false_groups": results["weights+outputs"]["false_groups"],
        "planted_found_weights_only": results["weights"]["planted_found"],
        "planted_max_output_distance": results["weights"]["planted_max_output_distance"],
        "broken_models": len(evidence),
        "broken_pass_weights_only": sum(weights_only.accept(e) for e in evidence),
        "broken_pass": sum(thresholds.accept(e) for e in evidence),
        "broken_run": len(copies),
        "broken_min_output_distance": min((e["output_distance"] for e in copies), default=None),
        **({"hf_broken_pass": sum(p for p, _ in hf.values()), "hf_broken": sum(t for _, t in hf.values())} if hf else {}),
    }))


if __name__ == "__main__":
    main()
