"""The embedder deployment: uploaded checkpoints -> embeddings by the index's encoder (or everything
near-duplicate detection reads of them).

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
        return await asyncio.to_thread(self._each, uploads, self._vectors)

    @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=BATCH_WAIT_S)
    async def prints(self, uploads: list[Upload]) -> list:
        """Per upload, what near-duplicate detection reads of it
        (:class:`~pipeline.search.duplicates.Prints`, its embedding included) or the refusal of it."""
        return await asyncio.to_thread(self._each, uploads, self._prints)

    def _vectors(self, graphs: list) -> list[np.ndarray]:
        from pipeline.encoders import embed

        return list(embed(self.trained.encoder, graphs).numpy())

    def _prints(self, graphs: list) -> list:
        from pipeline.encoders import probe_inputs_of
        from pipeline.search.duplicates import model_prints

        return model_prints(graphs, self.trained.encoder, probe_inputs_of(self.trained.encoder))

    @staticmethod
    def _each(uploads: list[Upload], compute) -> list:
        """``compute(graphs)`` over the uploads that parse, as one batch; a refusal for each other."""
        from pipeline.checkpoint import CheckpointError

        out: list = [None] * len(uploads)
        graphs = {}
        for i, upload in enumerate(uploads):
            try:
                graphs[i] = read_upload(upload)
            except CheckpointError as error:
                out[i] = refusal(upload, error)
        if graphs:
            for i, result in zip(graphs, compute(list(graphs.values()))):
                out[i] = result
        return out
