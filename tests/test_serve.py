"""The Ray Serve app over HTTP on 127.0.0.1: neighbours by id and by uploaded checkpoint with filters,
near-duplicates, and a 4xx with the reason for every kind of bad input (nothing crashes)."""
from __future__ import annotations

import io
import json
import os
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch

PORT = 8431


@pytest.fixture(scope="module")
def server(ray_session, indexed):
    from ray import serve

    from serve.app import build_app

    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    serve.run(build_app({"index": indexed["out"], "graphs": indexed["graphs"], "catalog": indexed["catalog"],
                         "encoder_state": indexed["state"], "max_body_mib": 1}), name="zoo", route_prefix="/")
    yield f"http://127.0.0.1:{PORT}"
    serve.delete("zoo")


def _call(url: str, body: bytes | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_neighbours_by_id_with_filters(server, indexed):
    status, health = _call(f"{server}/health")
    assert status == 200 and health["models"] == len(indexed["rows"])
    model = next(r["model_id"] for r in indexed["rows"] if r["family"] == "mlp")
    status, body = _call(f"{server}/models/{model}/neighbors?k=3&family=cnn&max_params=10000")
    assert status == 200 and len(body["results"]) == 3
    assert all(r["family"] == "cnn" and r["num_params"] <= 10000 for r in body["results"])
    status, body = _call(f"{server}/models/no-such-model/neighbors")
    assert status == 404 and "no-such-model" in body["detail"]
    assert _call(f"{server}/models/{model}/neighbors?k=0")[0] == 422
    status, body = _call(f"{server}/models/{model}/neighbors?task=no-such-task")  # not an empty 200
    assert status == 422 and "no-such-task" in body["detail"] and "moons" in body["detail"]
    status, body = _call(f"{server}/search?family=transfomer", b"checked before the upload is read")
    assert status == 422 and "transfomer" in body["detail"] and "mlp" in body["detail"]


def test_search_by_uploaded_checkpoint(server, indexed):
    from pipeline.checkpoint import open_checkpoint, save_checkpoint
    from pipeline.graph import build_graph
    from pipeline.testing import random_transform

    row = next(r for r in indexed["rows"] if r["family"] == "resnet" and not r["duplicate_of"])
    ckpt = open_checkpoint(str(indexed["zoo"] / row["path"]))
    graph = build_graph(ckpt)
    path = indexed["tmp"] / "served.safetensors"
    save_checkpoint(random_transform(graph, np.random.default_rng(5)).tensors, str(path), ckpt.metadata)
    status, body = _call(f"{server}/search?k=66&filename=served.safetensors", path.read_bytes())
    assert status == 200, body
    parent = next(r for r in body["results"] if r["model_id"] == row["model_id"])
    assert parent["score"] > 1 - 1e-5 and parent["score"] >= body["results"][0]["score"] - 1e-6
    status, body = _call(f"{server}/embed", path.read_bytes())
    assert status == 200 and len(body["vector"]) == 32


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch /tmp/weightzoo-served-pwned",))


def test_bad_uploads_get_4xx_with_the_reason(server):
    status, body = _call(f"{server}/search?filename=bad.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{oops")
    assert status == 422 and "bad.safetensors" in body["detail"] and "CorruptCheckpoint" in body["detail"]
    status, body = _call(f"{server}/search?filename=notes.txt", b"just some text, not weights")
    assert status == 422 and "NotACheckpoint" in body["detail"]
    buffer = io.BytesIO()
    torch.save({"w": torch.ones(2), "evil": _RunsCode()}, buffer)
    status, body = _call(f"{server}/search?filename=evil.pt", buffer.getvalue())
    assert status == 422 and "UnsafeCheckpoint" in body["detail"]
    assert not os.path.exists("/tmp/weightzoo-served-pwned")
    status, body = _call(f"{server}/search", b"")
    assert status == 400 and "empty" in body["detail"]
    status, body = _call(f"{server}/embed?activation=wobbly", b"\x10" * 64)
    assert status == 422 and "unknown activation 'wobbly'" in body["detail"]
    status, body = _call(f"{server}/search", b"\0" * (2 * 2**20))
    assert status == 413 and "limit" in body["detail"]
    assert _call(f"{server}/health")[0] == 200  # still serving


def test_duplicates_endpoint(server, indexed):
    status, body = _call(f"{server}/duplicates")
    assert status == 200
    found = sorted(tuple(sorted(m["model_id"] for m in g["models"])) for g in body["groups"])
    assert found == sorted(tuple(sorted((r["model_id"], r["duplicate_of"]))) for r in indexed["rows"]
                           if r["duplicate_of"])
