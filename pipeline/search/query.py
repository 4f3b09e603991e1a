"""Queries over an indexed zoo (the output of :func:`pipeline.search.embed.run_embed`): top-k by model or by a
checkpoint file that is not in the index, filtered by metadata, and near-duplicate groups.

Metadata per model comes from the ingestion manifest (file, family, parameter count) and, when given,
the zoo catalog (task, data set, model id, test metric), joined on the checkpoint's file name.
"""
from __future__ import annotations

import posixpath
from dataclasses import dataclass

import numpy as np

from pipeline.checkpoint.discover import model_name
from pipeline.ingest.store import read_manifest
from pipeline.search.atlas import Atlas
from pipeline.search.duplicates import DuplicateThresholds, Prints, duplicates_of, near_duplicate_groups
from pipeline.search.embed import read_embeddings, table_prints
from pipeline.search.index import EncoderMismatch, ModelIndex
from pipeline.storage import join, read_parquet, stamp


@dataclass
class Filters:
    """Metadata constraints on results (``None``: any)."""
    task: str | None = None
    family: str | None = None
    min_params: int | None = None
    max_params: int | None = None

    def accept(self, meta: dict) -> bool:
        return ((self.task is None or meta.get("task") == self.task)
                and (self.family is None or meta.get("family") == self.family)
                and (self.min_params is None or meta.get("num_params", 0) >= self.min_params)
                and (self.max_params is None or meta.get("num_params", 0) <= self.max_params))


#: the metadata fields whose filter values must exist among the indexed models
FILTERED = ("task", "family")


class UnknownFilterValue(ValueError):
    """A filter naming a task or family that no indexed model has (the message lists those it has)."""


class ZooSearch:
    """``out``: an embed_zoo output folder; ``graphs``: its ingestion folder; ``catalog``: the zoo's
    catalog.parquet (optional); ``encoder_state``: the encoder's state file (needed for queries by
    file; must be the version the index was built with). Paths or URIs.

    A snapshot of the folder as it was when made: :meth:`changed` tells when the index was saved
    since (a new model added), and a new ``ZooSearch`` reads it."""

    def __init__(self, out: str, graphs: str, catalog: str | None = None, encoder_state: str | None = None):
        self.stamp = stamp(join(out, "index", "index.json"))
        self.index = ModelIndex.load(join(out, "index"))
        self.out, self.encoder_state, self._encoder = out, encoder_state, None
        self._prints: tuple[list[str], list[Prints]] | None = None
        self._atlas: tuple[Atlas, list[dict]] | None = None
        manifest = read_manifest(graphs).to_pylist()
        by_name = {posixpath.basename(r["path"]): r for r in read_parquet(catalog).to_pylist()} if catalog else {}
        self.meta: dict[str, dict] = {}
        for r in manifest:
            if r["status"] != "converted" or r["content_id"] in self.meta:
                continue
            name = posixpath.basename(r["source_path"])
            c = by_name.get(name, {})
            self.meta[r["content_id"]] = {
                "content_id": r["content_id"], "file": name, "family": r["family"], "num_params": r["num_params"],
                "model_id": c.get("model_id", model_name(name)), "task": c.get("task"),
                "dataset": c.get("dataset"), "test_metric": c.get("test_metric"),
                "duplicate_of": c.get("duplicate_of") or None}
        self._by_name = {m["model_id"]: cid for cid, m in self.meta.items()}
        self._by_name.update({m["file"]: cid for cid, m in self.meta.items()})
        self._known = {field: sorted({m[field] for m in self.meta.values() if m.get(field)}) for field in FILTERED}

    def changed(self) -> bool:
        """Whether the index was saved since this snapshot was read."""
        return stamp(join(self.out, "index", "index.json")) != self.stamp

    def resolve_id(self, model: str) -> str:
        """A content id from a content id, a model id or a checkpoint file name."""
        if model in self.meta:
            return model
        if model in self._by_name:
            return self._by_name[model]
        raise KeyError(f"no indexed model {model!r} (give a content id, model id or file name)")

    def by_id(self, model: str, k: int = 10, filters: Filters | None = None) -> list[dict]:
        """Top-``k`` models nearest to an indexed model (itself excluded)."""
        cid = self.resolve_id(model)
        return self.search_vector(self.index.vector(cid), k, filters or Filters(), exclude=cid)

    def by_file(self, path: str, k: int = 10, filters: Filters | None = None, hints: dict | None = None,
                sidecar: bool = True) -> list[dict]:
        """Top-``k`` models nearest to a checkpoint file (read, converted and embedded now); see
        :meth:`embed_file` for ``hints`` and ``sidecar``."""
        return self.search_vector(self.embed_file(path, hints, sidecar), k, filters or Filters())

    def embed_file(self, path: str, hints: dict | None = None, sidecar: bool = True) -> np.ndarray:
        """``[dim]`` embedding of a checkpoint file by the index's encoder. ``hints``: checked
        command-line hints (:mod:`pipeline.graph.hints`); ``sidecar``: also read the hints sidecar of
        the file's folder. Raises :class:`~pipeline.checkpoint.CheckpointError` (naming the file) on
        bad input."""
        from pipeline.checkpoint import open_checkpoint
        from pipeline.encoders import embed
        from pipeline.graph import build_graph
        from pipeline.graph.hints import Sidecars

        sidecar_hints = Sidecars().hints_for(path) if sidecar else None
        graph = build_graph(open_checkpoint(path), sidecar=sidecar_hints, command_line=hints)
        return embed(self.encoder(), [graph]).numpy()[0]

    def encoder(self):
        """The index's encoder (loaded once; its version must match the index's)."""
        if self._encoder is None:
            from pipeline.encoders.state import load_trained

            if not self.encoder_state:
                raise ValueError("queries by file need the encoder's state file (encoder_state)")
            trained = load_trained(self.encoder_state)
            if trained.version != self.index.encoder_version:
                raise EncoderMismatch(f"index holds {self.index.encoder_version!r} embeddings; "
                                      f"{self.encoder_state} is {trained.version!r}")
            self._encoder = trained.encoder
        return self._encoder

    def check(self, filters: Filters) -> None:
        """Raise :class:`UnknownFilterValue` when ``filters`` name a task or family no model has."""
        for field in FILTERED:
            value = getattr(filters, field)
            if value is not None and value not in self._known[field]:
                raise UnknownFilterValue(f"unknown {field} {value!r}; the index has: {', '.join(self._known[field])}")

    def search_vector(self, vector: np.ndarray, k: int, filters: Filters, exclude: str | None = None) -> list[dict]:
        """Top-``k`` indexed models nearest to ``vector [dim]`` that pass ``filters`` (fetching more
        candidates from faiss until ``k`` pass or the index is exhausted), best first, with metadata.
        Raises :class:`UnknownFilterValue` for a task or family no indexed model has."""
        self.check(filters)
        fetch = k + 1
        while True:
            hits = self.index.search(vector[None], fetch, self.index.encoder_version)[0]
            results = [{**self.meta.get(cid, {"content_id": cid}), "score": score} for cid, score in hits
                       if cid != exclude and filters.accept(self.meta.get(cid, {}))]
            if len(results) >= k or fetch >= len(self.index):
                return results[:k]
            fetch = min(4 * fetch, len(self.index))

    def prints(self) -> tuple[list[str], list[Prints]]:
        """Content ids and :class:`~pipeline.search.duplicates.Prints` of the indexed models (read
        once)."""
        if self._prints is None:
            table = read_embeddings(self.out, self.index.encoder_version)
            self._prints = table.column("content_id").to_pylist(), table_prints(table)
        return self._prints

    def near_duplicates(self, thresholds: DuplicateThresholds = DuplicateThresholds()) -> list[dict]:
        """Near-duplicate groups among the indexed models (see :mod:`pipeline.search.duplicates`),
        each with its members' metadata."""
        groups = near_duplicate_groups(*self.prints(), thresholds)
        return [{**g, "models": [self.meta.get(cid, {"content_id": cid}) for cid in g["members"]]} for g in groups]

    def duplicates_of(self, prints: Prints, thresholds: DuplicateThresholds = DuplicateThresholds()) -> list[dict]:
        """The indexed models that are near-duplicates of a model given by its ``prints`` (one not
        necessarily indexed), each with its metadata and the pair's evidence, nearest first."""
        return [{**self.meta.get(hit["content_id"], {}), **hit} for hit in duplicates_of(prints, *self.prints(), thresholds)]

    def atlas(self) -> tuple[Atlas, list[dict]]:
        """The zoo's 2-D map (:mod:`pipeline.search.atlas`) and each model's point on it: content
        id, model id, task, family and ``x``, ``y`` (computed once)."""
        if self._atlas is None:
            vectors = self.index.vectors()
            atlas = Atlas.fit(vectors)
            meta = lambda cid: self.meta.get(cid, {})  # noqa: E731
            points = [{"content_id": cid, "model_id": meta(cid).get("model_id"), "task": meta(cid).get("task"),
                       "family": meta(cid).get("family"), "x": round(float(x), 5), "y": round(float(y), 5)}
                      for cid, (x, y) in zip(self.index.ids, atlas.project(vectors))]
            self._atlas = atlas, points
        return self._atlas
