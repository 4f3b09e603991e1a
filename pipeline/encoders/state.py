"""A trained encoder on disk: the state file training exports and indexing, queries and serving load.

A state file is ``torch.save({"model": EncoderWithHead state, "config": dict})`` read back with
``weights_only=True``; ``config`` holds at least ``encoder`` (a registry name) and
``encoder_kwargs``, and the training run's settings. An encoder version is
``<name>@<sha256 of the state file, 12 hex>``: an index built with one version refuses vectors of
another.
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pipeline.constants import EMBEDDING_DIM
from pipeline.storage import is_dir, join, read_bytes, write_file

#: the encoder that ships with the package (its model card: ``pretrained/MODEL_CARD.md``), used
#: wherever no other encoder state is named
DEFAULT_ENCODER = str(Path(__file__).with_name("pretrained") / "scale_gmn-default.pt")


class EncoderWithHead(nn.Module):
    """An encoder and its metric-prediction head: graphs -> (embeddings ``[B, dim]``, metric ``[B]``)."""

    def __init__(self, encoder: nn.Module, dim: int):
        super().__init__()
        self.encoder = encoder
        self.metric_head = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, 1))

    def forward(self, graphs):
        z = self.encoder(graphs)
        return z, self.metric_head(z).squeeze(-1)


def embedding_dim(config: dict) -> int:
    """The embedding width of the encoder a state's ``config`` describes."""
    return config["encoder_kwargs"].get("dim", EMBEDDING_DIM)


def state_file(path: str) -> str:
    """The state file itself: ``path``, or ``path/state.pt`` for a training checkpoint folder."""
    return join(path, "state.pt") if is_dir(path) else path


def load_state(path: str) -> tuple[EncoderWithHead, dict]:
    """The encoder with its metric head (eval mode) and its config, from a state file or a training
    checkpoint folder (path or URI)."""
    return _load(read_bytes(state_file(path)))


def _load(data: bytes) -> tuple[EncoderWithHead, dict]:
    from pipeline.encoders import build_encoder

    state = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    config = state["config"]
    model = EncoderWithHead(build_encoder(config["encoder"], **config["encoder_kwargs"]), embedding_dim(config))
    model.load_state_dict(state["model"])
    return model.eval(), config


def save_state(model: EncoderWithHead, config: dict, path: str, half: bool = False) -> None:
    """Write what :func:`load_state` reads (path or URI). ``half``: store the parameters in float16
    (half the file; they load into the float32 model, its invariances exact as ever), the buffers
    (probe inputs) as they are."""
    parameters = {name for name, _ in model.named_parameters()}
    state = {name: t.half() if half and name in parameters else t for name, t in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save({"model": state, "config": config}, buffer)
    write_file(path, buffer.getvalue())


def encoder_version(path: str, name: str) -> str:
    """``<name>@<sha256 of the state file, 12 hex>``."""
    return _version(read_bytes(state_file(path)), name)


def _version(data: bytes, name: str) -> str:
    return f"{name}@{hashlib.sha256(data).hexdigest()[:12]}"


@dataclass
class TrainedEncoder:
    """What inference needs of a state file: the encoder (eval mode), its registry name, embedding
    width and version."""
    encoder: nn.Module
    name: str
    dim: int
    version: str


def load_trained(path: str) -> TrainedEncoder:
    """The encoder of a state file, for inference (see :func:`load_state`); the file is read once."""
    data = read_bytes(state_file(path))
    model, config = _load(data)
    return TrainedEncoder(model.encoder, config["encoder"], embedding_dim(config), _version(data, config["encoder"]))
