"""Generate a zoo: train every spec of a preset as Ray tasks and write ``catalog.parquet`` and
``probe_inputs.npz``."""
from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import ray
from tqdm import tqdm

from pipeline.constants import NUM_PROBES
from pipeline.storage import join, resolve, write_file, write_parquet
from pipeline.zoo.copies import PRESET_COPIES, plant_copies
from pipeline.zoo.lineage import lineage_catalog_rows
from pipeline.zoo.presets import LINEAGE_PRESET, zoo_specs
from pipeline.zoo.train import spec_data, train_models

#: the families whose networks the probe executor runs (see pipeline.encoders.executor)
PROBED_FAMILIES = ("mlp", "resnet", "cnn")


def probe_input_sets(specs: list[dict], count: int = NUM_PROBES, seed: int = 0) -> dict[str, np.ndarray]:
    """Unlabeled probe inputs for encoders of a zoo: for each input shape its probed families read
    (``"64"`` for flat digits, ``"1x8x8"`` for digits images), ``count`` training inputs drawn
    evenly from the tasks of that shape, without labels; test inputs are never used."""
    by_shape: dict[tuple, dict[str, np.ndarray]] = {}
    for task, family in sorted({(s["task"], s["family"]) for s in specs if s["family"] in PROBED_FAMILIES}):
        x = spec_data({"task": task, "family": family}).x_train.numpy()
        by_shape.setdefault(x.shape[1:], {})[task] = x
    rng = np.random.default_rng(seed)
    sets = {}
    for shape, tasks in sorted(by_shape.items()):
        names = sorted(tasks)
        sets["x".join(map(str, shape))] = np.concatenate([
            tasks[name][rng.choice(len(tasks[name]), len(range(j, count, len(names))), replace=False)]
            for j, name in enumerate(names)])
    return sets


def make_zoo(out_dir: str, preset: str = "tiny", seed: int = 0, chunk_size: int = 8,
             copies: int | None = None) -> pa.Table:
    """Train the ``preset`` zoo into ``out_dir`` (``models/*.safetensors`` and ``catalog.parquet``),
    then plant ``copies`` near-duplicates (default: the preset's count; see :mod:`.copies`), and
    write the zoo's :func:`probe_input_sets` to ``probe_inputs.npz``. The ``lineage`` preset grows
    trees of derived models instead (:mod:`.lineage`).

    Specs are dealt round-robin into chunks (so expensive families spread over workers), one Ray task
    per chunk. Returns the catalog, sorted by model id; ``duplicate_of`` is empty for trained
    models. Ray must be running.
    """
    if preset == LINEAGE_PRESET:
        return _write(out_dir, lineage_catalog_rows(out_dir, seed), seed)
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
    return _write(out_dir, rows, seed)


def _write(out_dir: str, rows: list[dict], seed: int) -> pa.Table:
    """``catalog.parquet`` (sorted by model id) and the zoo's ``probe_inputs.npz``; the catalog."""
    catalog = pa.Table.from_pylist(sorted(rows, key=lambda r: r["model_id"]))
    write_parquet(*resolve(join(out_dir, "catalog.parquet")), catalog)
    buffer = io.BytesIO()
    np.savez(buffer, **probe_input_sets(rows, seed=seed))
    write_file(join(out_dir, "probe_inputs.npz"), buffer.getvalue())
    return catalog
