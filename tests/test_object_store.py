"""Every job on ``s3://`` inputs and outputs, against a local S3 endpoint (see ``object_store`` in
conftest): checkpoints uploaded to a bucket are ingested into shards in the bucket, embedded and
indexed there, and searched from there, with the same results as the local run of the same zoo."""
from __future__ import annotations

import numpy as np
import pyarrow.fs as pafs

from conftest import small_encoder_state


def test_ingest_embed_and_search_on_s3(object_store, indexed, tmp_path):
    from pipeline.ingest import IngestConfig, run_ingest
    from pipeline.search import ZooSearch, read_embeddings, run_embed
    from pipeline.storage import resolve

    object_store.create_bucket(Bucket="zoo")
    s3, _ = resolve("s3://zoo")
    pafs.copy_files(str(indexed["zoo"] / "models"), "zoo/models", destination_filesystem=s3)
    with s3.open_output_stream("zoo/models/broken.safetensors") as f:  # recorded, not fatal
        f.write(b"\x00" * 16)

    summary = run_ingest(IngestConfig(["s3://zoo/models"], "s3://zoo/graphs"))
    count = len(indexed["rows"])
    assert (summary["stored_models"], summary["error"]) == (count, 1)
    assert summary["run_errors"][0][0] == "s3://zoo/models/broken.safetensors"
    state = small_encoder_state(tmp_path / "state.pt", 0, str(indexed["zoo"] / "probe_inputs.npz"))
    embedded = run_embed("s3://zoo/graphs", state, "s3://zoo/index", num_actors=2)
    assert (embedded["embedded_now"], embedded["indexed"]) == (count, count)
    assert embedded["index"].startswith("s3://")

    # the same vectors as the local run of the same encoder on the same zoo
    remote, local = read_embeddings("s3://zoo/index"), read_embeddings(indexed["out"])
    vectors = lambda t: dict(zip(t.column("content_id").to_pylist(), t.column("vector").to_pylist()))  # noqa: E731
    remote, local = vectors(remote), vectors(local)
    assert remote.keys() == local.keys()
    assert max(np.abs(np.subtract(remote[k], local[k])).max() for k in local) < 1e-5

    search = ZooSearch("s3://zoo/index", "s3://zoo/graphs", indexed["catalog"], state)
    model = sorted(local)[0]
    hits = search.by_id(model, 3)
    assert [h["content_id"] for h in hits] == [h["content_id"] for h in ZooSearch(
        indexed["out"], indexed["graphs"], indexed["catalog"], state).by_id(model, 3)]
