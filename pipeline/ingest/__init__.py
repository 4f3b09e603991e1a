"""Ingestion: the Ray Data job that streams checkpoints into weight-graph Parquet shards
(:mod:`.job`), and the readers of what it stores (:mod:`.store`)."""
from pipeline.ingest.job import IngestConfig, run_ingest
from pipeline.ingest.store import model_dataset, model_table, read_manifest, stored_models

__all__ = ["IngestConfig", "model_dataset", "model_table", "read_manifest", "run_ingest", "stored_models"]
