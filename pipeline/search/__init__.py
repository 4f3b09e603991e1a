"""Search: embedding a zoo into an embeddings table and a faiss index (:mod:`.embed`,
:mod:`.index`), adding one model in place (:mod:`.add`), queries by model, by file and by metadata
(:mod:`.query`), near-duplicates (:mod:`.duplicates`) and a 2-D map of the zoo (:mod:`.atlas`)."""
from pipeline.search.add import add_checkpoint
from pipeline.search.duplicates import DuplicateThresholds
from pipeline.search.embed import read_embeddings, run_embed
from pipeline.search.index import EncoderMismatch, ModelIndex
from pipeline.search.query import Filters, UnknownFilterValue, ZooSearch

__all__ = ["add_checkpoint", "DuplicateThresholds", "EncoderMismatch", "Filters", "ModelIndex", "UnknownFilterValue", "ZooSearch", "read_embeddings",
           "run_embed"]
