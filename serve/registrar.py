"""The registrar deployment: the one writer of the index folder (``POST /models``).

An upload is converted, embedded and persisted by :func:`pipeline.search.add_checkpoint` (graph,
embedding row, index: each a commit; a content id already indexed is not added again). Writes are
serialized (one replica, one add at a time) and run on a worker thread, off the event loop. The
searchers see the new model on their next call (they follow the index folder). Keep this
deployment at one replica: two writers of one folder would lose each other's index saves.
"""
from __future__ import annotations

import asyncio

from ray import serve

from serve.uploads import Refusal, Upload, refusal, safe_name, upload_file

#: where added models are recorded as coming from (unique per model: the ingestion records keep one
#: model per source path)
UPLOAD_SOURCE = "uploads/{content_id}"


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=32)
class Registrar:
    """``index``: weightzoo index's output folder; ``graphs``: its ingestion folder;
    ``encoder_state``: the index's encoder. Paths or URIs."""

    def __init__(self, index: str, graphs: str, encoder_state: str):
        import torch

        from pipeline.encoders.state import load_trained

        torch.set_num_threads(1)
        self.index, self.graphs = index, graphs
        self.trained = load_trained(encoder_state)
        self.lock = asyncio.Lock()

    async def add(self, upload: Upload) -> dict | Refusal:
        """The upload added to the index: ``{"content_id", "added", "family", "num_params"}``
        (``added`` false: it was indexed already), or the refusal of it."""
        async with self.lock:
            return await asyncio.to_thread(self._add, upload)

    def _add(self, upload: Upload) -> dict | Refusal:
        from pipeline.checkpoint import CheckpointError
        from pipeline.search import EncoderMismatch, add_checkpoint

        with upload_file(upload) as path:
            try:
                return add_checkpoint(path, self.index, self.graphs, self.trained,
                                      source=f"{UPLOAD_SOURCE}/{safe_name(upload.name)}", hints=upload.hints)
            except CheckpointError as error:
                return refusal(upload, error)
            except EncoderMismatch as exc:
                return Refusal(409, str(exc))
