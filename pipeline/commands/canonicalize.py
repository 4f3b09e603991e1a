"""Canonicalize checkpoints with a trained autoencoder: each one, and every element of its symmetry
orbit, becomes the same canonical network, an ordinary checkpoint of the autoencoder's target
architecture.

    weightzoo canonicalize --autoencoder runs/autoencoders/ae-inr_sine-scale_gmn.pt \\
        --input data/zoo/models/inr_digits-inr-00003.safetensors --out data/canonical
    weightzoo canonicalize --autoencoder ... --input data/zoo/models --out data/canonical   # a folder
    weightzoo canonicalize --autoencoder ... --input a.safetensors b.safetensors --out data/canonical \
        --merge data/merged.safetensors          # and the mean of their canonical forms, as one checkpoint

Writes ``<out>/<name>.canonical.safetensors`` (metadata: ``canonical_of``, ``reconstruction_error``,
``autoencoder``) and ``<out>/results.parquet``: one row per input, with its reconstruction error, or
the typed error naming why it was refused (another architecture or activation, a corrupt or
unsafe file, NaN weights); the rest go on.
"""
from __future__ import annotations

import argparse
import collections
import itertools
import json
import posixpath

import pyarrow as pa
from tqdm import tqdm

from pipeline.autoencoder.canonical import canonical_forms, merge, target_metadata
from pipeline.autoencoder.trainer import load_autoencoder
from pipeline.checkpoint import CheckpointError, open_checkpoint, save_checkpoint
from pipeline.checkpoint.discover import discover
from pipeline.graph import build_graph
from pipeline.graph.hints import add_hint_arguments, hints_from_args
from pipeline.storage import join, make_dirs, resolve, write_parquet

RESULT_SCHEMA = pa.schema([("source_path", pa.string()), ("canonical_path", pa.string()),
                           ("reconstruction_error", pa.float64()), ("error_kind", pa.string()),
                           ("error", pa.string())])


def canonicalize_all(autoencoder: str, inputs: list[str], out: str, hints: dict | None = None,
                     batch_size: int = 64, merged: str = "") -> pa.Table:
    """Canonicalize every checkpoint ``inputs`` name (paths, URIs, folders, globs) into ``out``,
    ``batch_size`` at a time (memory stays bounded); the results table (see the module docstring).
    ``merged``: also write the mean of the canonical forms there (metadata ``merged_from``: the
    sources, JSON)."""
    model, _ = load_autoencoder(autoencoder)
    target, rows = model.target, []
    metadata = target_metadata(model, autoencoder)

    def batches():
        batch = []
        for ref in discover(inputs):
            try:
                graph = build_graph(open_checkpoint(ref.uri), command_line=hints)
                target.check(graph.tensors, graph.family, graph.activation, ref.uri)
                batch.append((ref.uri, graph))
            except CheckpointError as error:
                rows.append({"source_path": ref.uri, "error_kind": type(error).__name__, "error": error.reason})
            if len(batch) == batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def written():
        """Each canonical form, once written."""
        for batch in tqdm(batches(), desc="canonicalizing", unit="batch"):
            forms, errors = canonical_forms(model, [g for _, g in batch])
            for (uri, _), tensors, error in zip(batch, forms, errors):
                name = posixpath.basename(uri.rstrip("/")).removesuffix(".safetensors")
                path = join(out, f"{name}.canonical.safetensors")
                save_checkpoint(tensors, path, {"canonical_of": uri, "reconstruction_error": repr(error), **metadata})
                rows.append({"source_path": uri, "canonical_path": path, "reconstruction_error": error})
                yield tensors

    if merged:
        forms = written()
        first = next(forms, None)
        if first is not None:
            mean = merge(itertools.chain([first], forms))
            sources = [r["source_path"] for r in rows if r.get("canonical_path")]
            save_checkpoint(mean, merged, {"merged_from": json.dumps(sources), **metadata})
    else:
        collections.deque(written(), maxlen=0)
    table = pa.Table.from_pylist(sorted(rows, key=lambda r: r["source_path"]), schema=RESULT_SCHEMA)
    fs, root = resolve(out)
    make_dirs(out)
    write_parquet(fs, f"{root}/results.parquet", table)
    return table


def main(argv: list[str] | None = None) -> pa.Table:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--autoencoder", required=True, help="an exported autoencoder (weightzoo train-autoencoder)")
    parser.add_argument("--input", required=True, nargs="+", help="checkpoints, folders or glob patterns")
    parser.add_argument("--out", required=True)
    parser.add_argument("--merge", default="", help="also write the mean of the canonical forms to this checkpoint")
    parser.add_argument("--batch-size", type=int, default=64, help="checkpoints read and canonicalized at a time")
    add_hint_arguments(parser)
    args = parser.parse_args(argv)
    table = canonicalize_all(args.autoencoder, args.input, args.out, hints_from_args(args, parser), args.batch_size,
                             args.merge)
    done = [r for r in table.to_pylist() if r["error"] is None]
    print(json.dumps({"canonicalized": len(done), "refused": table.num_rows - len(done),
                      "mean_reconstruction_error": sum(r["reconstruction_error"] for r in done) / max(len(done), 1)}))
    return table


if __name__ == "__main__":
    main()
