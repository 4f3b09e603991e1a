"""Embed checkpoints or a zoo's stored graphs with an encoder and build their faiss index (incremental).

    weightzoo index my-checkpoints/ --out my-index          # ingest, embed with the shipped encoder, index
    weightzoo index --graphs data/graphs --encoder-state runs/encoders/scale_gmn.pt --out data/index
    weightzoo index data/zoo/models --graphs data/graphs --out data/index --query-first 5

Checkpoints named (folders, globs, URIs) are ingested first (into ``--graphs``, default
``<out>/graphs``), so one command goes from checkpoints to a queryable index. The encoder is the one
that ships with the package unless ``--encoder-state`` names another. Re-running embeds only models
not embedded by this encoder version.
"""
from __future__ import annotations

import argparse
import json
import posixpath

from pipeline.encoders.state import DEFAULT_ENCODER
from pipeline.graph.hints import add_hint_arguments, hints_from_args
from pipeline.ingest import IngestConfig, read_manifest, run_ingest
from pipeline.ray_utils import ensure_ray
from pipeline.search import ModelIndex, read_embeddings, run_embed
from pipeline.search.embed import embedding_matrix
from pipeline.storage import join


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="*", help="checkpoints to ingest first (folders, globs, URIs)")
    parser.add_argument("--out", required=True, help="embeddings and index folder")
    parser.add_argument("--graphs", default=None, help="ingestion output folder (default: <out>/graphs)")
    parser.add_argument("--encoder-state", default=DEFAULT_ENCODER,
                        help="a trained encoder's state.pt (weightzoo train; default: the shipped encoder)")
    parser.add_argument("--ingest", nargs="*", default=[], help="more checkpoints to ingest first")
    parser.add_argument("--factory", default="Flat", help="faiss index factory string (Flat, HNSW32, IVF1024,Flat)")
    parser.add_argument("--num-actors", type=int, default=None)
    parser.add_argument("--use-gpu", action="store_true", help="one GPU per embedding actor (on a GPU cluster: only this changes)")
    parser.add_argument("--query-first", type=int, default=0, help="print the top-5 of this many models")
    parser.add_argument("--address", default=None)
    add_hint_arguments(parser)
    args = parser.parse_args(argv)
    hints = hints_from_args(args, parser)
    graphs = args.graphs or join(args.out, "graphs")
    ensure_ray(args.address)
    if args.checkpoints or args.ingest:
        run_ingest(IngestConfig(args.checkpoints + args.ingest, graphs, hints=hints))
    summary = run_embed(graphs, args.encoder_state, args.out, args.factory, args.num_actors, use_gpu=args.use_gpu)
    print(json.dumps(summary))
    if args.query_first:
        manifest = read_manifest(graphs).to_pylist()
        name = {r["content_id"]: posixpath.basename(r["source_path"]) for r in manifest if r["status"] == "converted"}
        index = ModelIndex.load(summary["index"])
        table = read_embeddings(args.out, summary["encoder_version"]).slice(0, args.query_first)
        for cid, hits in zip(table.column("content_id").to_pylist(),
                             index.search(embedding_matrix(table), 6, summary["encoder_version"])):
            print(f"{name[cid]}:\n  " + "\n  ".join(f"{s:.3f}  {name[h]}" for h, s in hits if h != cid))
    return summary


if __name__ == "__main__":
    main()
