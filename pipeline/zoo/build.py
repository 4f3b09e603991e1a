"""Generate a zoo: train every spec of a preset as Ray tasks and write ``catalog.parquet``."""
from __future__ import annotations

import posixpath

import pyarrow as pa
import ray
from tqdm import tqdm

from pipeline.checkpoint.fs import resolve
from pipeline.zoo.copies import PRESET_COPIES, plant_copies
from pipeline.zoo.presets import zoo_specs
from pipeline.zoo.train import train_models


def make_zoo(out_dir: str, preset: str = "tiny", seed: int = 0, chunk_size: int = 8,
             copies: int | None = None) -> pa.Table:
    """Train the ``preset`` zoo into ``out_dir`` (``models/*.safetensors`` and ``catalog.parquet``),
    then plant ``copies`` near-duplicates (default: the preset's count; see :mod:`.copies`).

    Specs are dealt round-robin into chunks (so expensive families spread over workers), one Ray task
    per chunk. Returns the catalog, sorted by model id; ``duplicate_of`` is empty for trained
    models. Ray must be running.
    """
    from pipeline.ingest import write_parquet

    specs = zoo_specs(preset, seed)
    num_chunks = max(1, -(-len(specs) // chunk_size))
    chunks = [specs[i::num_chunks] for i in range(num_chunks)]
    train = ray.remote(num_cpus=1)(train_models)
    pending = [train.remote(chunk, out_dir) for chunk in chunks]
    rows = []
    with tqdm(total=len(specs), desc=f"training zoo '{preset}'", unit="model") as bar:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            batch = ray.get(done[0])
            rows.extend(batch)
            bar.update(len(batch))
    rows = [{**r, "duplicate_of": "", "transform": ""} for r in rows]
    count = PRESET_COPIES.get(preset, 0) if copies is None else copies
    if count:
        rows += ray.get(ray.remote(num_cpus=1)(plant_copies).remote(rows, out_dir, count, seed))
    catalog = pa.Table.from_pylist(sorted(rows, key=lambda r: r["model_id"]))
    fs, root = resolve(out_dir)
    write_parquet(fs, posixpath.join(root, "catalog.parquet"), catalog)
    return catalog
