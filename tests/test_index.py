"""The faiss model index: exact self-retrieval, idempotent adds, round trip through disk, and refusal of
embeddings from another encoder version."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.search import EncoderMismatch, ModelIndex


@pytest.mark.parametrize("factory", ["Flat", "HNSW32", "IVF8,Flat"])
def test_search_add_and_round_trip(tmp_path, factory):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(400, 16)).astype(np.float32)
    ids = [f"m{i}" for i in range(400)]
    index = ModelIndex(16, "scale_gmn@1", factory)
    assert index.add(ids, vectors, "scale_gmn@1") == 400
    assert index.add(ids[:10], vectors[:10], "scale_gmn@1") == 0 and len(index) == 400
    hits = index.search(vectors[:20], 3, "scale_gmn@1")
    top1 = [h[0] for h in hits]
    assert sum(cid == ids[i] for i, (cid, _) in enumerate(top1)) >= (20 if factory == "Flat" else 18)
    if factory == "Flat":
        assert all(abs(score - 1.0) < 1e-5 for _, score in top1)
    index.save(str(tmp_path / "idx"))
    loaded = ModelIndex.load(str(tmp_path / "idx"))
    assert loaded.ids == index.ids and loaded.search(vectors[:20], 3, "scale_gmn@1") == hits
    np.testing.assert_allclose(loaded.vector("m5"), vectors[5] / np.linalg.norm(vectors[5]), rtol=1e-5, atol=1e-6)


def test_refuses_other_encoder_versions():
    index = ModelIndex(4, "scale_gmn@1")
    index.add(["a"], np.ones((1, 4)), "scale_gmn@1")
    with pytest.raises(EncoderMismatch, match="scale_gmn@1"):
        index.search(np.ones((1, 4)), 1, "scale_gmn@2")
    with pytest.raises(EncoderMismatch):
        index.add(["b"], np.ones((1, 4)), "neural_graphs@1")
    with pytest.raises(KeyError, match="not in the index"):
        index.vector("zzz")
