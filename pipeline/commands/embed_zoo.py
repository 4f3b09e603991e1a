"""Embed a zoo's stored graphs with a trained encoder and build its faiss index (incremental).

    weightzoo index --graphs data/graphs --encoder-state runs/encoders/scale_gmn.pt --out data/index
    weightzoo index --ingest data/zoo/models --graphs data/graphs ... --query-first 5

--ingest first runs the ingestion job on raw checkpoints (folders, globs, URIs), so one command goes
from checkpoints to a queryable index. Re-running embeds only models not embedded by this encoder
version.
"""
from __future__ import annotations

import argparse
import json
import posixpath

from pipeline.graph.hints import add_hint_arguments, hints_from_args
from pipeline.ingest import IngestConfig, read_manifest, run_ingest
from pipeline.ray_utils import ensure_ray
from pipeline.search import ModelIndex, read_embeddings, run_embed
from pipeline.search.embed import embedding_matrix


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graphs", required=True, help="ingestion output folder")
    parser.add_argument("--encoder-state", required=True, help="a trained encoder's state.pt (weightzoo train)")
    parser.add_argument("--out", required=True, help="embeddings and index folder")
    parser.add_argument("--ingest", nargs="*", default=None, help="checkpoints to ingest first")
    parser.add_argument("--factory", default="Flat", help="faiss index factory string (Flat, HNSW32, IVF1024,Flat)")
    parser.add_argument("--num-actors", type=int, default=None)
    parser.add_argument("--query-first", type=int, default=0, help="print the top-5 of this many models")
    parser.add_argument("--address", default=None)
    add_hint_arguments(parser)
    args = parser.parse_args(argv)
    hints = hints_from_args(args, parser)
    ensure_ray(args.address)
    if args.ingest:
        run_ingest(IngestConfig(args.ingest, args.graphs, hints=hints))
    summary = run_embed(args.graphs, args.encoder_state, args.out, args.factory, args.num_actors)
    print(json.dumps(summary))
    if args.query_first:
        manifest = read_manifest(args.graphs).to_pylist()
        name = {r["content_id"]: posixpath.basename(r["source_path"]) for r in manifest if r["status"] == "converted"}
        index = ModelIndex.load(summary["index"])
        table = read_embeddings(args.out, summary["encoder_version"]).slice(0, args.query_first)
        for cid, hits in zip(table.column("content_id").to_pylist(),
                             index.search(embedding_matrix(table), 6, summary["encoder_version"])):
            print(f"{name[cid]}:\n  " + "\n  ".join(f"{s:.3f}  {name[h]}" for h, s in hits if h != cid))
    return summary


if __name__ == "__main__":
    main()
