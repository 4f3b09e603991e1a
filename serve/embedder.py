"""The embedder deployment: uploaded checkpoints -> embeddings by the index's encoder.

Requests are batched (``@serve.batch``: up to ``MAX_BATCH`` uploads, or what arrived within
``BATCH_WAIT_S``) and each batch's CPU work (parsing, graph building, the encoder's forward) runs on
a worker thread, so the replica's event loop keeps taking requests meanwhile.
"""
from __future__ import annotations

import asyncio

import numpy as np
from ray import serve

from serve.uploads import Refusal, Upload, read_upload, refusal

MAX_BATCH = 8
BATCH_WAIT_S = 0.005


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=32)
class Embedder:
    """``encoder_state``: the trained encoder's state file (path or URI)."""

    def __init__(self, encoder_state: str):
        import torch

        from pipeline.encoders.state import load_trained

        torch.set_num_threads(1)
        self.trained = load_trained(encoder_state)

    def version(self) -> str:
        return self.trained.version

    @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=BATCH_WAIT_S)
    async def embed(self, uploads: list[Upload]) -> list[np.ndarray | Refusal]:
        """Per upload, its ``[dim]`` embedding or the refusal of it."""
        return await asyncio.to_thread(self._embed, uploads)

    def _embed(self, uploads: list[Upload]) -> list[np.ndarray | Refusal]:
        from pipeline.checkpoint import CheckpointError
        from pipeline.encoders import embed

        out: list = [None] * len(uploads)
        graphs = {}
        for i, upload in enumerate(uploads):
            try:
                graphs[i] = read_upload(upload)
            except CheckpointError as error:
                out[i] = refusal(upload, error)
        if graphs:
            for i, vector in zip(graphs, embed(self.trained.encoder, list(graphs.values())).numpy()):
                out[i] = vector
        return out
