"""The alignment deployment: two uploaded checkpoints -> the second aligned to the first by weight
matching (re-basin: permutations, and the signs and scales its activation allows), or with
``alpha`` the two merged at that point of the aligned path (:mod:`pipeline.rebasin`).

The answer is an ordinary checkpoint in the second's layout (GPT-2's fused ``Conv1D`` included) and
the matching's figures. Checkpoints of two different architectures are refused with 422.
"""
from __future__ import annotations

import asyncio
import json

from ray import serve

from serve.uploads import Refusal, Upload, read_upload, refusal, safe_name


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=8)
class Aligner:
    async def align(self, a: Upload, b: Upload, alpha: float | None = None) -> tuple[bytes, dict] | Refusal:
        """``(safetensors bytes, figures)``: B aligned to A, or with ``alpha`` the model at ``alpha``
        on the path from A to aligned B; or the refusal."""
        return await asyncio.to_thread(self._align, a, b, alpha)

    def _align(self, a: Upload, b: Upload, alpha: float | None) -> tuple[bytes, dict] | Refusal:
        from pipeline.checkpoint import CheckpointError
        from pipeline.checkpoint.writer import checkpoint_bytes
        from pipeline.graph.layouts import checkpoint_tensors
        from pipeline.rebasin import match
        from pipeline.rebasin.interpolate import interpolate

        graphs = []
        for upload in (a, b):
            try:
                graphs.append(read_upload(upload))
            except CheckpointError as error:
                return refusal(upload, error)
        try:
            result = match(*graphs)
        except ValueError as error:  # different architectures
            return Refusal(422, f"{safe_name(b.name)} cannot be aligned to {safe_name(a.name)}: {error}")
        figures = {"objective": result.objective, "naive_objective": result.naive_objective,
                   "similarity": result.similarity, "naive_similarity": result.naive_similarity,
                   "seconds": result.seconds}
        metadata = {"family": graphs[1].family, "activation": graphs[1].activation, "aligned_to": safe_name(a.name)}
        tensors = result.aligned
        if alpha is not None:
            tensors = interpolate(graphs[0].tensors, result.aligned, alpha)
            metadata.update(merge_alpha=repr(float(alpha)), merged_from=json.dumps([safe_name(a.name), safe_name(b.name)]))
        return checkpoint_bytes(checkpoint_tensors(tensors), metadata), figures
