"""weightzoo: neural-network weights as data.

Subpackages
-----------
checkpoint  reading and writing checkpoints (safetensors, sharded, HF folders, torch state dicts)
graph       the weight-graph format (schema), family recognition and graph builders, shard rows
zoo         the labelled model zoo we generate ourselves (tasks, model families, training)
ingest      the Ray Data job that streams checkpoints into Parquet graph shards
"""
