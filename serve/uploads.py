"""Uploaded checkpoints as the deployments receive them, and refusals as they send them back.

An :class:`Upload` carries the checkpoint's bytes (through Ray's object store between replicas), the
name the client gave it and its hints. :func:`read_upload` parses it with the project's validating
readers (never unpickled) into a weight graph. A deployment answers bad input with a
:class:`Refusal` (HTTP status and reason) instead of raising, so one bad upload in a batch fails
only itself.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field

from pipeline.graph.schema import WeightGraph


@dataclass
class Upload:
    data: bytes
    name: str = "upload"
    hints: dict = field(default_factory=dict)


@dataclass
class Refusal:
    status: int
    detail: str


def safe_name(filename: str) -> str:
    """A client's file name reduced to a plain file name (no folders, no odd characters)."""
    name = os.path.basename(filename.replace("\\", "/")).strip() or "upload"
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)[:128]


@contextlib.contextmanager
def upload_file(upload: Upload) -> Iterator[str]:
    """The upload written to a temporary file (named as the client named it), for the readers that
    take paths; removed on exit."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, safe_name(upload.name))
        with open(path, "wb") as f:
            f.write(upload.data)
        yield path


def read_upload(upload: Upload) -> WeightGraph:
    """The upload's weight graph. Raises :class:`~pipeline.checkpoint.CheckpointError` naming the
    upload on bad input."""
    from pipeline.checkpoint import open_checkpoint
    from pipeline.graph import build_graph

    with upload_file(upload) as path:
        graph = build_graph(open_checkpoint(path), command_line=upload.hints)
        return graph.with_tensors({name: t.copy() for name, t in graph.tensors.items()})  # off the file


def refusal(upload: Upload, error) -> Refusal:
    """The 422 of a checkpoint error."""
    return Refusal(422, f"{safe_name(upload.name)}: {error.kind}: {error.reason}")
