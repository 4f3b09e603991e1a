"""Starting or joining Ray the same way in every job: a job submitted to a cluster (``RAY_ADDRESS``
set, or ``--address``) joins it; a script run directly starts a local Ray of its own."""
from __future__ import annotations

import os

import ray


def ensure_ray(address: str | None = None, num_cpus: int | None = None,
               object_store_memory: int | None = None) -> None:
    """Connect to ``address`` (or ``RAY_ADDRESS``) if given, else start a local cluster."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
    else:
        ray.init(num_cpus=num_cpus, object_store_memory=object_store_memory, include_dashboard=False)
