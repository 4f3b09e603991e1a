"""Model lineage from weights alone: which model was derived from which, and how.

:mod:`.evidence` reads a pair of models after alignment, :mod:`.forest` recovers the typed,
directed forest, :mod:`.mother` is the MoTHer baseline, :mod:`.metrics` scores a forest against a
lineage zoo's ground truth (:mod:`pipeline.zoo.lineage`), and :mod:`.job` runs it all on Ray.
"""
from __future__ import annotations

#: derivation types, as the lineage zoo records them and :func:`.evidence.edge_type` reads them
EDGE_TYPES = ("finetune", "partial_finetune", "lora", "cast", "merge", "prune", "symmetry")
