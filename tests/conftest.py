"""Shared fixtures: one real local Ray cluster for the whole session, and one generated tiny zoo.

Tests that use Ray (directly or through a fixture that does: the zoo, the index, the server) are
marked ``ray``, so ``pytest -m "not ray"`` runs the unit tests alone in seconds."""
from __future__ import annotations

import os

import pytest

import serve  # noqa: F401 -- Ray Serve's throughput mode, as weightzoo serve runs it (see serve/__init__.py)

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def pytest_collection_modifyitems(items):
    for item in items:  # fixturenames holds every fixture a test needs, directly or not
        if "ray_session" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.ray)


@pytest.fixture(scope="session")
def object_store():
    """A local S3 endpoint (moto's server on 127.0.0.1), set in the environment as AWS's variables
    before Ray starts, so every worker reads and writes ``s3://`` URIs through it as a cluster's
    nodes would through their configured store. Yields a boto3 client for making buckets."""
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(AWS_ENDPOINT_URL=f"http://{host}:{port}", AWS_ACCESS_KEY_ID="testing",
                      AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    yield boto3.client("s3")
    server.stop()


@pytest.fixture(scope="session")
def ray_session(object_store):
    import ray

    ray.init(num_cpus=2, object_store_memory=400 * 1024**2, include_dashboard=False)
    yield ray
    from ray import serve as ray_serve

    ray_serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_zoo(ray_session, tmp_path_factory):
    """The ``tiny`` preset, trained once (about 60 models): ``(folder, catalog table)``."""
    from pipeline.zoo.build import make_zoo

    out = tmp_path_factory.mktemp("zoo")
    catalog = make_zoo(str(out), "tiny", seed=0)
    return out, catalog


SMALL = {"dim": 32, "hidden": 32, "layers": 2}


def small_encoder_state(path, seed: int, probe_inputs: str = "") -> str:
    """An untrained small ScaleGMN saved as a state file (what embed_zoo and queries read), with the
    probe inputs of ``probe_inputs`` (a zoo's ``probe_inputs.npz``) if given."""
    from dataclasses import asdict

    import torch

    from pipeline.encoders import build_encoder, probe_inputs_of
    from pipeline.encoders.probes import load_probe_inputs
    from pipeline.encoders.state import EncoderWithHead, save_state
    from pipeline.training import TrainConfig

    torch.manual_seed(seed)
    encoder = build_encoder("scale_gmn", **SMALL)
    if probe_inputs:
        probe_inputs_of(encoder).set(load_probe_inputs(probe_inputs))
    save_state(EncoderWithHead(encoder, 32),
               asdict(TrainConfig(encoder="scale_gmn", encoder_kwargs=SMALL, probe_inputs=probe_inputs)), str(path))
    return str(path)


@pytest.fixture(scope="session")
def indexed(ray_session, tiny_zoo, tmp_path_factory):
    """The tiny zoo ingested and embedded by an untrained small encoder with the zoo's probe inputs:
    paths and catalog rows."""
    from pipeline.ingest import IngestConfig, run_ingest
    from pipeline.search import run_embed

    folder, catalog = tiny_zoo
    tmp = tmp_path_factory.mktemp("embed")
    graphs = str(tmp / "graphs")
    run_ingest(IngestConfig([str(folder / "models")], graphs))
    state = small_encoder_state(tmp / "state.pt", 0, str(folder / "probe_inputs.npz"))
    out = str(tmp / "embedded")
    first = run_embed(graphs, state, out, num_actors=1)
    return {"graphs": graphs, "state": state, "out": out, "first": first, "tmp": tmp,
            "catalog": str(folder / "catalog.parquet"), "zoo": folder, "rows": catalog.to_pylist()}
