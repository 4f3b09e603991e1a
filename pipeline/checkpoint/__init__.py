"""Reading and writing checkpoints. See :mod:`pipeline.checkpoint.reader` for the layouts we accept."""
from pipeline.checkpoint.errors import (CheckpointError, CorruptCheckpoint, InvalidHints, InvalidWeights,
                                        NotACheckpoint, UnsafeCheckpoint, UnsupportedCheckpoint)
from pipeline.checkpoint.reader import Checkpoint, natural_key, open_checkpoint
from pipeline.checkpoint.writer import save_checkpoint

__all__ = ["Checkpoint", "CheckpointError", "CorruptCheckpoint", "InvalidHints", "InvalidWeights", "NotACheckpoint",
           "UnsafeCheckpoint", "UnsupportedCheckpoint", "natural_key", "open_checkpoint", "save_checkpoint"]
