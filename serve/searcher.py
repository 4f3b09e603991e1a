"""The search deployment: the faiss index and the models' metadata (:class:`pipeline.search.ZooSearch`).

Each call is a quick lookup (no encoder here: vectors of uploads come from the embedder). Unknown
models are refused with 404, filter values no indexed model has with 422 listing those it has.
"""
from __future__ import annotations

import numpy as np
from ray import serve

from pipeline.search import DuplicateThresholds, Filters, UnknownFilterValue
from serve.uploads import Refusal


#: near-duplicate groupings kept, one per set of thresholds asked for (the oldest goes first)
CACHED_THRESHOLDS = 8


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=64)
class Searcher:
    """``index``: weightzoo index's output folder; ``graphs``: its ingestion folder; ``catalog``: the
    zoo's catalog.parquet (optional). Paths or URIs."""

    def __init__(self, index: str, graphs: str, catalog: str | None = None):
        from pipeline.search import ZooSearch

        self.search = ZooSearch(index, graphs, catalog)
        self.groups: dict[DuplicateThresholds, list[dict]] = {}  # near-duplicate groups by thresholds

    def status(self) -> dict:
        return {"models": len(self.search.index), "encoder_version": self.search.index.encoder_version}

    def check(self, filters: Filters) -> Refusal | None:
        try:
            self.search.check(filters)
        except UnknownFilterValue as exc:
            return Refusal(422, str(exc))
        return None

    def model(self, model: str) -> dict | Refusal:
        try:
            return self.search.meta[self.search.resolve_id(model)]
        except KeyError as exc:
            return Refusal(404, exc.args[0])

    def neighbors(self, model: str, k: int, filters: Filters) -> list[dict] | Refusal:
        try:
            return self.search.by_id(model, k, filters)
        except KeyError as exc:
            return Refusal(404, exc.args[0])
        except UnknownFilterValue as exc:
            return Refusal(422, str(exc))

    def nearest(self, vector: np.ndarray, version: str, k: int, filters: Filters) -> list[dict] | Refusal:
        """The ``k`` models nearest to ``vector`` (embedded by encoder ``version``, which must be the
        index's: 409 otherwise)."""
        if version != self.search.index.encoder_version:
            return Refusal(409, f"the index holds {self.search.index.encoder_version!r} embeddings; the "
                                f"upload was embedded by {version!r}")
        try:
            return self.search.search_vector(vector, k, filters)
        except UnknownFilterValue as exc:
            return Refusal(422, str(exc))

    def duplicates(self, thresholds: DuplicateThresholds, model: str | None = None) -> list[dict] | Refusal:
        """Near-duplicate groups (each with its models and pairs); with ``model``, only its group."""
        if model is not None:
            found = self.model(model)
            if isinstance(found, Refusal):
                return found
        if thresholds not in self.groups:  # the index does not change under a replica: group it once
            if len(self.groups) >= CACHED_THRESHOLDS:
                self.groups.pop(next(iter(self.groups)))
            self.groups[thresholds] = [{"models": g["models"], "pairs": g["pairs"]}
                                       for g in self.search.near_duplicates(thresholds)]
        groups = self.groups[thresholds]
        if model is None:
            return groups
        return [g for g in groups if any(m["content_id"] == found["content_id"] for m in g["models"])]
