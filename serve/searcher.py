"""The search deployment: the faiss index and the models' metadata (:class:`pipeline.search.ZooSearch`).

Lookups are quick (no encoder here: vectors of uploads come from the embedder) and run on the
replica's event loop (``async``); what takes longer (near-duplicate groups, the map, an upload's
duplicates) runs on Serve's thread pool. Unknown models are refused with 404, filter values no
indexed model has with 422 listing those it has.

Every replica follows the index folder: before answering, it checks whether the index was saved
since it read it (a model added by ``POST /models`` or a ``weightzoo index`` run) and reads it again,
so an added model is found by the next query on any replica. Local folders are checked on every
call (a ``stat``), remote ones at most every ``REMOTE_CHECK_S``.
"""
from __future__ import annotations

import logging
import time

import numpy as np
from ray import serve

from pipeline.lineage.job import Lineage
from pipeline.search import DuplicateThresholds, Filters, UnknownFilterValue
from pipeline.storage import join, read_parquet, stamp
from serve.uploads import Refusal

logger = logging.getLogger("ray.serve")

#: near-duplicate groupings kept, one per set of thresholds asked for (the oldest goes first)
CACHED_THRESHOLDS = 8
#: how often a replica checks a remote index folder for changes, in seconds
REMOTE_CHECK_S = 1.0


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=64)
class Searcher:
    """``index``: weightzoo index's output folder; ``graphs``: its ingestion folder; ``catalog``: the
    zoo's catalog.parquet (optional); ``lineage``: a weightzoo lineage output folder (optional). Paths
    or URIs."""

    def __init__(self, index: str, graphs: str, catalog: str | None = None, lineage: str | None = None):
        self.where = (index, graphs, catalog)
        self.lineage_file = None if lineage is None else join(lineage, "lineage.parquet")
        self.lineage_read: tuple[object, Lineage] | None = None  # (the file's stamp, its index)
        self.check_every = 0.0 if "://" not in index else REMOTE_CHECK_S
        self.checked = 0.0
        self._read()

    def _read(self) -> None:
        from pipeline.search import ZooSearch

        self.search = ZooSearch(*self.where)
        self.groups: dict[tuple, list[dict]] = {}  # near-duplicate groups by (snapshot, thresholds)

    def _current(self):
        """The index as it is now (read again when it was saved since; a half-written save keeps
        the snapshot held until the next call)."""
        now = time.monotonic()
        if now - self.checked >= self.check_every:
            self.checked = now
            if self.search.changed():
                try:
                    self._read()
                except Exception as exc:  # noqa: BLE001 -- a save in progress: answer from the snapshot held
                    logger.warning("index %s not read again yet: %s: %s", self.where[0], type(exc).__name__, exc)
        return self.search

    async def status(self) -> dict:
        search = self._current()
        return {"models": len(search.index), "encoder_version": search.index.encoder_version}

    async def check(self, filters: Filters) -> Refusal | None:
        try:
            self._current().check(filters)
        except UnknownFilterValue as exc:
            return Refusal(422, str(exc))
        return None

    async def model(self, model: str) -> dict | Refusal:
        return self._model(model)

    def _model(self, model: str) -> dict | Refusal:
        search = self._current()
        try:
            return search.meta[search.resolve_id(model)]
        except KeyError as exc:
            return Refusal(404, exc.args[0])

    async def lineage(self, model: str) -> dict | Refusal:
        """The model's parents, children, ancestors and descendants in the lineage run (by the name
        the run gives it, or any name the index knows); empty for a model of the run with none."""
        if self.lineage_file is None:
            return Refusal(404, "this server serves no lineage run (start it with --lineage <a weightzoo lineage "
                                "output folder>)")
        now = stamp(self.lineage_file)
        if self.lineage_read is None or self.lineage_read[0] != now:
            self.lineage_read = (now, Lineage(read_parquet(self.lineage_file)))
        lineage = self.lineage_read[1]
        if model not in lineage:
            meta = self._model(model)
            if isinstance(meta, Refusal):
                return meta
            model = meta["model_id"]
        return lineage.of(model)

    async def neighbors(self, model: str, k: int, filters: Filters) -> list[dict] | Refusal:
        try:
            return self._current().by_id(model, k, filters)
        except KeyError as exc:
            return Refusal(404, exc.args[0])
        except UnknownFilterValue as exc:
            return Refusal(422, str(exc))

    async def nearest(self, vector: np.ndarray, version: str, k: int, filters: Filters) -> list[dict] | Refusal:
        """The ``k`` models nearest to ``vector`` (embedded by encoder ``version``, which must be the
        index's: 409 otherwise)."""
        search = self._current()
        if version != search.index.encoder_version:
            return Refusal(409, f"the index holds {search.index.encoder_version!r} embeddings; the "
                                f"upload was embedded by {version!r}")
        try:
            return search.search_vector(vector, k, filters)
        except UnknownFilterValue as exc:
            return Refusal(422, str(exc))

    def duplicates_of(self, prints) -> list[dict]:
        """The indexed near-duplicates of an upload, given by its
        :class:`~pipeline.search.duplicates.Prints` (the embedder's, so the index's encoder)."""
        return self._current().duplicates_of(prints)

    def map(self) -> dict:
        """The zoo's 2-D map: each model's point (content id, model id, task, family, x, y)."""
        return {"points": self._current().atlas()[1]}

    async def position(self, vector: np.ndarray) -> list[float]:
        """Where ``vector [dim]`` falls on the zoo's map: ``[x, y]``."""
        return [round(float(v), 5) for v in self._current().atlas()[0].project(vector[None])[0]]

    def duplicates(self, thresholds: DuplicateThresholds, model: str | None = None) -> list[dict] | Refusal:
        """Near-duplicate groups (each with its models and pairs); with ``model``, only its group."""
        if model is not None:
            found = self._model(model)
            if isinstance(found, Refusal):
                return found
        search = self._current()
        key = (search.stamp, thresholds)  # grouped once per snapshot of the index and thresholds
        if key not in self.groups:
            if len(self.groups) >= CACHED_THRESHOLDS:
                self.groups.pop(next(iter(self.groups)))
            self.groups[key] = [{"models": g["models"], "pairs": g["pairs"]} for g in search.near_duplicates(thresholds)]
        groups = self.groups[key]
        if model is None:
            return groups
        return [g for g in groups if any(m["content_id"] == found["content_id"] for m in g["models"])]
