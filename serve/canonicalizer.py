"""The canonicalization deployment: an uploaded checkpoint -> its canonical network, by the trained
autoencoder whose target architecture it is (see :mod:`pipeline.autoencoder`).

Every element of a model's symmetry orbit gets the same canonical network. A checkpoint no loaded
autoencoder writes is refused with 422 naming, per autoencoder, why.
"""
from __future__ import annotations

import asyncio

from ray import serve

from serve.uploads import Refusal, Upload, read_upload, refusal, safe_name


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=16)
class Canonicalizer:
    """``autoencoders``: exported autoencoders (``weightzoo train-autoencoder``), paths or URIs."""

    def __init__(self, autoencoders: list[str]):
        import torch

        from pipeline.autoencoder.trainer import load_autoencoder

        torch.set_num_threads(1)
        self.models = {path: load_autoencoder(path)[0] for path in autoencoders}

    def targets(self) -> list[str]:
        return [model.target.name for model in self.models.values()]

    async def canonicalize(self, upload: Upload) -> tuple[bytes, dict] | Refusal:
        """``(safetensors bytes, {"reconstruction_error", "autoencoder", "target"})`` or the refusal."""
        return await asyncio.to_thread(self._canonicalize, upload)

    def _canonicalize(self, upload: Upload) -> tuple[bytes, dict] | Refusal:
        from pipeline.autoencoder import UnsupportedArchitecture
        from pipeline.autoencoder.canonical import canonical_forms, target_metadata
        from pipeline.checkpoint import CheckpointError
        from pipeline.checkpoint.writer import checkpoint_bytes

        try:
            graph = read_upload(upload)
        except CheckpointError as error:
            return refusal(upload, error)
        reasons = []
        for path, model in self.models.items():
            try:
                model.target.check(graph.tensors, graph.family, graph.activation, safe_name(upload.name))
            except UnsupportedArchitecture as error:
                reasons.append(f"{model.target.name}: {error.reason}")
                continue
            (form,), (error,) = canonical_forms(model, [graph])
            metadata = {"canonical_of": safe_name(upload.name), "reconstruction_error": repr(error),
                        **target_metadata(model, path)}
            return checkpoint_bytes(form, metadata), {"reconstruction_error": error, "autoencoder": path,
                                                      "target": model.target.name}
        return Refusal(422, f"{safe_name(upload.name)}: UnsupportedArchitecture: no autoencoder here writes it ("
                            + ("; ".join(reasons) or "none is loaded") + ")")
