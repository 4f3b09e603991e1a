"""A faiss index of model embeddings: vectors by content id, named by a faiss factory string, tied
to the encoder version that produced them.

Vectors are L2-normalized and searched by inner product, so scores are cosine similarities.
``Flat`` is exact (right up to about 1e5 models); ``IVF{n},Flat`` or ``HNSW32`` beyond. Saved as
``index.faiss`` + ``ids.parquet`` + ``index.json`` in a folder (a path or URI).
"""
from __future__ import annotations

import json

import faiss
import numpy as np
import pyarrow as pa

from pipeline.numerics import unit_rows
from pipeline.storage import join, read_buffer, read_bytes, read_parquet, resolve, write_file, write_parquet


class EncoderMismatch(ValueError):
    """Vectors from one encoder version queried against an index built with another."""


class ModelIndex:
    def __init__(self, dim: int, encoder_version: str, factory: str = "Flat"):
        self.dim, self.encoder_version, self.factory = dim, encoder_version, factory
        self.index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        self.ids: list[str] = []
        self._rows: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, content_id: str) -> bool:
        return content_id in self._rows

    def _check(self, vectors: np.ndarray, encoder_version: str) -> np.ndarray:
        if encoder_version != self.encoder_version:
            raise EncoderMismatch(f"index holds {self.encoder_version!r} embeddings; got {encoder_version!r}")
        return unit_rows(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim))

    def add(self, ids: list[str], vectors: np.ndarray, encoder_version: str) -> int:
        """Add the vectors of ids not indexed yet (re-adding is a no-op); returns how many were new."""
        vectors = self._check(vectors, encoder_version)
        fresh, seen = [], set(self._rows)
        for i, cid in enumerate(ids):
            if cid not in seen:
                seen.add(cid)
                fresh.append(i)
        if not fresh:
            return 0
        if not self.index.is_trained:
            self.index.train(vectors[fresh])
        self.index.add(vectors[fresh])
        for i in fresh:
            self._rows[ids[i]] = len(self.ids)
            self.ids.append(ids[i])
        return len(fresh)

    def search(self, vectors: np.ndarray, k: int, encoder_version: str) -> list[list[tuple[str, float]]]:
        """Top-``k`` (content id, cosine) per query vector."""
        scores, rows = self.index.search(self._check(vectors, encoder_version), min(k, len(self.ids)))
        return [[(self.ids[r], float(s)) for r, s in zip(rr, ss) if r >= 0] for rr, ss in zip(rows, scores)]

    def vector(self, content_id: str) -> np.ndarray:
        """``[dim]`` unit vector of an indexed model."""
        if content_id not in self._rows:
            raise KeyError(f"model {content_id!r} is not in the index")
        self._direct_map()
        return self.index.reconstruct(self._rows[content_id])

    def vectors(self) -> np.ndarray:
        """``[len(self), dim]`` unit vectors, in the order of :attr:`ids`."""
        self._direct_map()
        return self.index.reconstruct_n(0, len(self.ids)) if self.ids else np.zeros((0, self.dim), np.float32)

    def _direct_map(self) -> None:
        """Let an IVF index reconstruct vectors by row."""
        ivf = faiss.try_extract_index_ivf(self.index)
        if ivf is not None and not ivf.direct_map.type:
            ivf.make_direct_map()

    def save(self, folder: str) -> None:
        """Write the index into ``folder`` (path or URI); ``index.json`` last, so a folder with one
        holds a whole index."""
        fs, root = resolve(folder)
        fs.create_dir(root, recursive=True)
        write_file(join(folder, "index.faiss"), faiss.serialize_index(self.index).tobytes())
        write_parquet(fs, f"{root}/ids.parquet", pa.table({"content_id": pa.array(self.ids, pa.string())}))
        write_file(join(folder, "index.json"), json.dumps({"dim": self.dim, "encoder_version": self.encoder_version,
                                                           "factory": self.factory, "count": len(self.ids)}))

    @classmethod
    def load(cls, folder: str) -> "ModelIndex":
        meta = json.loads(read_bytes(join(folder, "index.json")))
        index = cls(meta["dim"], meta["encoder_version"], meta["factory"])
        fs, root = resolve(folder)
        index.index = faiss.deserialize_index(np.frombuffer(read_buffer(fs, f"{root}/index.faiss"), np.uint8))
        index.ids = read_parquet(join(folder, "ids.parquet")).column("content_id").to_pylist()
        index._rows = {cid: i for i, cid in enumerate(index.ids)}
        if len(index.ids) != index.index.ntotal or len(index.ids) != meta["count"]:
            raise ValueError(f"{folder}: index holds {index.index.ntotal} vectors for {len(index.ids)} ids")
        return index
