"""Search: embedding a zoo into an embeddings table and a faiss index (:mod:`.embed`,
:mod:`.index`), queries by model, by file and by metadata (:mod:`.query`), and near-duplicates
(:mod:`.duplicates`)."""
from pipeline.search.duplicates import DuplicateThresholds
from pipeline.search.embed import read_embeddings, run_embed
from pipeline.search.index import EncoderMismatch, ModelIndex
from pipeline.search.query import Filters, UnknownFilterValue, ZooSearch

__all__ = ["DuplicateThresholds", "EncoderMismatch", "Filters", "ModelIndex", "UnknownFilterValue", "ZooSearch", "read_embeddings",
           "run_embed"]
