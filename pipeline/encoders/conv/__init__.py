"""Message-passing layers over dense weight blocks, one per file."""
from pipeline.encoders.conv.edge_message import EdgeMessage
from pipeline.encoders.conv.symmetric_update import SymmetricUpdate

__all__ = ["EdgeMessage", "SymmetricUpdate"]
