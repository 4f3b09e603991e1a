"""Typed errors for checkpoints that cannot be read.

Every error names the file and the reason; jobs record ``type(err).__name__`` and ``str(err)``
and go on with the next file.
"""
from __future__ import annotations


class CheckpointError(Exception):
    """Base class: a checkpoint at ``path`` could not be used, for ``reason``."""

    def __init__(self, path: str, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    @property
    def kind(self) -> str:
        return type(self).__name__


class NotACheckpoint(CheckpointError):
    """The file is not in any checkpoint format we read (or is empty)."""


class CorruptCheckpoint(CheckpointError):
    """The file claims a format but its structure is inconsistent (truncated, lying header...)."""


class UnsafeCheckpoint(CheckpointError):
    """The file would need arbitrary code execution to load (a pickle with foreign globals)."""


class UnsupportedCheckpoint(CheckpointError):
    """Well-formed, but uses something we do not handle (dtype, tensor too large for a row...)."""


class InvalidHints(CheckpointError):
    """Hints given for a checkpoint (a sidecar file, the command line) are malformed or unknown."""


class InvalidWeights(CheckpointError):
    """Readable, but the weights themselves are unusable (NaN/Inf values, no tensors)."""
