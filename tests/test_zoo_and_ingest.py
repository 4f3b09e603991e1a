"""The generated zoo and the Ray Data ingestion job, on the real tiny zoo with a real local Ray."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import torch

from pipeline.checkpoint import open_checkpoint, save_checkpoint
from pipeline.graph import read_shard
from pipeline.ingest import IngestConfig, run_ingest
from pipeline.zoo.copies import PRESET_COPIES
from pipeline.zoo.presets import zoo_specs
from pipeline.zoo.train import train_model

ROOT = Path(__file__).resolve().parents[1]


def test_catalog_matches_checkpoints(tiny_zoo):
    folder, catalog = tiny_zoo
    rows = catalog.to_pylist()
    assert len(rows) == len(zoo_specs("tiny")) + PRESET_COPIES["tiny"] >= 55
    assert len({r["model_id"] for r in rows}) == len(rows)
    assert {r["family"] for r in rows} == {"mlp", "resnet", "cnn", "inr", "transformer"}
    assert len({r["task"] for r in rows}) >= 6
    for r in rows:
        ckpt = open_checkpoint(str(folder / r["path"]))
        assert ckpt.num_params == r["num_params"]
        assert {k: ckpt.metadata[k] for k in ("task", "family", "activation")} == \
               {k: r[k] for k in ("task", "family", "activation")}


def test_zoo_is_deterministic(tiny_zoo, tmp_path):
    folder, catalog = tiny_zoo
    spec = next(s for s in zoo_specs("tiny") if s["family"] == "cnn")
    torch.set_num_threads(1)
    row = train_model(spec, str(tmp_path))
    again = open_checkpoint(str(tmp_path / row["path"])).content_id()
    assert again == open_checkpoint(str(folder / row["path"])).content_id()


def test_probe_inputs_are_unlabeled_training_inputs(tiny_zoo):
    """The zoo's probe_inputs.npz: one set per input shape its probed families read, 64 rows each,
    drawn from the training inputs of the tasks of that shape (never a test input)."""
    from pipeline.constants import NUM_PROBES
    from pipeline.encoders.probes import ProbeInputs, load_probe_inputs
    from pipeline.zoo.tasks import load_task

    folder, _ = tiny_zoo
    sets = load_probe_inputs(str(folder / "probe_inputs.npz"))
    assert set(sets) == {"1x8x8", "64", "2", "4", "10", "13"}  # digits images and flat; moons, iris, ...
    assert all(len(a) == NUM_PROBES for a in sets.values())
    digits = load_task("digits")
    train, test = digits.x_train.reshape(len(digits.x_train), -1), digits.x_test.reshape(len(digits.x_test), -1)
    for rows in (sets["1x8x8"].reshape(NUM_PROBES, -1), sets["64"]):
        assert all(np.isclose(train, r).all(1).any() and not np.isclose(test, r).all(1).any() for r in rows)
    assert len({r.tobytes() for r in sets["2"]}) == NUM_PROBES  # moons, without repeats
    ProbeInputs().set(sets)


@pytest.fixture(scope="module")
def zoo_inputs(tiny_zoo, tmp_path_factory):
    """The tiny zoo's checkpoints plus a duplicate, an HF folder and broken/hostile files."""
    folder, catalog = tiny_zoo
    inputs = tmp_path_factory.mktemp("inputs")
    shutil.copytree(folder / "models", inputs / "models")
    shutil.copy(folder / "models" / "iris-mlp-00000.safetensors", inputs / "renamed-copy.safetensors")
    hf = inputs / "hf-bert"
    hf.mkdir()
    bert = next(r for r in catalog.to_pylist() if r["family"] == "transformer")
    shutil.copy(folder / bert["path"], hf / "model.safetensors")
    (hf / "config.json").write_text(json.dumps({"hidden_act": "gelu", "num_attention_heads": 2}))
    bad = inputs / "bad"
    bad.mkdir()
    (bad / "empty.safetensors").write_bytes(b"")
    (bad / "text.safetensors").write_bytes(b"this is not a checkpoint at all, just text")
    full = (folder / "models" / "digits-cnn-00000.safetensors").read_bytes()
    (bad / "truncated.safetensors").write_bytes(full[: len(full) // 3])
    w = torch.randn(4, 4)
    w[0, 0] = float("nan")
    save_checkpoint({"layers.0.weight": w}, str(bad / "nan.safetensors"))
    torch.save({"w": torch.ones(2), "evil": _Evil()}, bad / "evil.pt")
    return inputs, catalog


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/weightzoo-ingest-pwned",))


EXPECTED_ERRORS = {"empty.safetensors": "NotACheckpoint", "text.safetensors": "NotACheckpoint",
                   "truncated.safetensors": "CorruptCheckpoint", "nan.safetensors": "InvalidWeights",
                   "evil.pt": "UnsafeCheckpoint"}


def _manifest(out: Path) -> list[dict]:
    return sorted(pq.read_table(out / "manifest.parquet").to_pylist(), key=lambda r: r["source_path"])


def _wait_until_still(out: Path, quiet: float = 3.0, limit: float = 60.0) -> None:
    """Wait until nothing under ``out`` has changed for ``quiet`` seconds (at most ``limit``)."""
    def snapshot():
        state = []
        for p in out.rglob("*"):
            try:
                state.append((str(p), p.stat().st_mtime_ns))
            except FileNotFoundError:  # a temporary file moved into place meanwhile
                state.append((str(p), -1))
        return sorted(state)
    last, since, deadline = snapshot(), time.time(), time.time() + limit
    while time.time() - since < quiet and time.time() < deadline:
        time.sleep(0.2)
        now = snapshot()
        if now != last:
            last, since = now, time.time()


def _shard_rows(out: Path):
    parts = sorted(str(p).removesuffix(".graphs.parquet") for p in (out / "shards").glob("part-*.graphs.parquet"))
    return [g for part in parts for g in read_shard(pafs.LocalFileSystem(), part)]


def test_ingest_tiny_zoo(ray_session, zoo_inputs, tmp_path):
    inputs, catalog = zoo_inputs
    out = tmp_path / "graphs"
    summary = run_ingest(IngestConfig([str(inputs)], str(out), batch_size=16))
    n_models = catalog.num_rows
    assert summary["discovered"] == n_models + 2 + len(EXPECTED_ERRORS)
    assert (summary["converted"], summary["duplicate"], summary["error"]) == (n_models, 2, len(EXPECTED_ERRORS))
    assert not os.path.exists("/tmp/weightzoo-ingest-pwned")

    errors = {Path(r["source_path"]).name: r for r in pq.read_table(out / "errors.parquet").to_pylist()}
    assert {k: v["error_kind"] for k, v in errors.items()} == EXPECTED_ERRORS
    assert all(r["source_path"] in r["error"] for r in errors.values())

    manifest = _manifest(out)
    by_path = {Path(r["source_path"]).name: r for r in manifest}
    for row in catalog.to_pylist():
        rec = by_path[Path(row["path"]).name]
        assert rec["graph_mode"] == "computational"
        assert rec["family"] == row["family"] and rec["num_params"] == row["num_params"]
    bert = Path(next(r["path"] for r in catalog.to_pylist() if r["family"] == "transformer")).name
    for original, copy in (("iris-mlp-00000.safetensors", "renamed-copy.safetensors"), (bert, "hf-bert")):
        # the same weights under two names are one model: one stored, the other a duplicate of it
        pair = [by_path[original], by_path[copy]]
        assert sorted(r["status"] for r in pair) == ["converted", "duplicate"]
        assert pair[0]["content_id"] == pair[1]["content_id"] and pair[1]["family"] == pair[0]["family"]

    graphs = _shard_rows(out)
    assert sorted(g.info["content_id"] for g in graphs) == sorted(r["content_id"] for r in manifest
                                                                  if r["status"] == "converted")
    for graph in graphs:  # exact round trip against the source file
        source = open_checkpoint(graph.info["source_path"])
        assert {n: t.tobytes() for n, t in graph.tensors.items()} == {n: t.tobytes() for n, t in source.tensors.items()}
    shard_bytes = sum(p.stat().st_size for p in (out / "shards").glob("*.parquet"))
    weight_bytes = sum(r["num_params"] for r in manifest if r["status"] == "converted") * 4
    assert shard_bytes <= 1.2 * weight_bytes

    again = run_ingest(IngestConfig([str(inputs)], str(out), batch_size=16))
    assert (again["skipped_unchanged"], again["converted"], again["duplicate"]) == (summary["discovered"], 0, 0)
    assert _manifest(out) == manifest and len(_shard_rows(out)) == len(graphs)

    extra = inputs / "extra.safetensors"
    save_checkpoint({"layers.0.weight": torch.randn(3, 2), "layers.0.bias": torch.randn(3)}, str(extra))
    more = run_ingest(IngestConfig([str(inputs)], str(out), batch_size=16))
    assert (more["converted"], more["skipped_unchanged"]) == (1, summary["discovered"])
    extra.unlink()


def test_killed_midway_and_restarted_gives_the_same_result(ray_session, zoo_inputs, tmp_path):
    inputs, _ = zoo_inputs
    clean = tmp_path / "clean"
    run_ingest(IngestConfig([str(inputs / "models")], str(clean), batch_size=4))

    killed = tmp_path / "killed"
    env = dict(os.environ, RAY_ADDRESS=ray_session.get_runtime_context().gcs_address, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, str(ROOT / "jobs" / "ingest_zoo.py"), str(inputs / "models"),
                             "--out", str(killed), "--batch-size", "4", "--num-actors", "1"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((killed / "records").glob("part-*"))) < 2:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    _wait_until_still(killed)  # the killed job's converter actors live in the shared cluster until Ray reaps them
    committed = len(list((killed / "records").glob("part-*")))
    assert 2 <= committed < 15, "the job should have been killed midway"

    summary = run_ingest(IngestConfig([str(inputs / "models")], str(killed), batch_size=4))
    assert summary["skipped_unchanged"] >= 2 * 4
    strip = ("source_path", "content_id", "status", "family", "graph_mode", "num_params")
    assert [{k: r[k] for k in strip} for r in _manifest(killed)] == [{k: r[k] for k in strip} for r in _manifest(clean)]
    ids = [g.info["content_id"] for g in _shard_rows(killed)]
    assert len(ids) == len(set(ids)) == len(_shard_rows(clean))


def test_a_lost_shard_is_converted_again(ray_session, zoo_inputs, tmp_path):
    """A committed shard that disappears (deleted, or lost to a race with a killed run) loses nothing
    its checkpoints can give back: the next run converts them again."""
    inputs, _ = zoo_inputs
    out = tmp_path / "out"
    run_ingest(IngestConfig([str(inputs / "models")], str(out), batch_size=8))
    before = sorted(g.info["content_id"] for g in _shard_rows(out))
    victim = sorted((out / "shards").glob("part-*.graphs.parquet"))[0]
    lost = len(list(read_shard(pafs.LocalFileSystem(), str(victim).removesuffix(".graphs.parquet"))))
    victim.unlink()
    Path(str(victim).replace(".graphs.", ".weights.")).unlink()
    summary = run_ingest(IngestConfig([str(inputs / "models")], str(out), batch_size=8))
    assert summary["redone_lost"] >= lost > 0 and summary["converted"] == lost
    assert sorted(g.info["content_id"] for g in _shard_rows(out)) == before


def test_automatic_batches_hold_many_small_files_few_large_ones_and_feed_every_actor():
    from pipeline.ingest.job import BATCH_BYTES, MAX_BATCH, batch_size_for

    assert batch_size_for([10_000] * 100_000, 2) == MAX_BATCH                 # small files: many per task
    assert batch_size_for([25_000] * 12_000, 2) == 1_500                      # ... but 4 tasks per actor
    assert batch_size_for([BATCH_BYTES // 4] * 1_000, 2) == 4                 # large files: about 64 MiB a task
    assert batch_size_for([10 * BATCH_BYTES] * 3, 2) == 1 and batch_size_for([], 2) == 1
