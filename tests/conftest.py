"""Shared fixtures: one real local Ray cluster for the whole session, and one generated tiny zoo."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.fixture(scope="session")
def ray_session():
    import ray

    ray.init(num_cpus=2, object_store_memory=400 * 1024**2, include_dashboard=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_zoo(ray_session, tmp_path_factory):
    """The ``tiny`` preset, trained once (about 60 models): ``(folder, catalog table)``."""
    from pipeline.zoo.build import make_zoo

    out = tmp_path_factory.mktemp("zoo")
    catalog = make_zoo(str(out), "tiny", seed=0)
    return out, catalog
