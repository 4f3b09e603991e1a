"""weightzoo: neural-network weights as data. The subpackages are the steps of the data flow
(see docs/architecture.md):

checkpoint  reading and writing checkpoints (safetensors, sharded, HF folders, torch state dicts)
graph       the weight-graph format (schema), family recognition and graph builders, shard rows
ingest      the Ray Data job that streams checkpoints into Parquet graph shards, and their readers
encoders    weight encoders: graphs -> symmetry-invariant embeddings; a trained encoder's state
training    contrastive training of encoders under Ray Train
search      embedding a zoo into a faiss index, queries, near-duplicates
evaluation  retrieval and the evaluation report
rebasin     weight matching under the symmetry group, interpolation and merging
zoo         the labelled model zoo we generate ourselves (tasks, model families, training)

Shared: storage (paths and URIs), symmetry (the group actions), constants, numerics, testing.
"""
