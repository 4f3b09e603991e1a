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

from conftest import small_encoder_state

PORT = 8431


def _autoencoder(indexed) -> str:
    """An untrained SIREN autoencoder (its canonical forms are exactly invariant all the same)."""
    from pipeline.autoencoder import Autoencoder, target_of
    from pipeline.autoencoder.trainer import AutoencoderConfig, save_autoencoder, target_config
    from pipeline.checkpoint import open_checkpoint

    rows = [r for r in indexed["rows"] if r["family"] == "inr"]
    target = target_of(rows[0])
    stats = target.statistics([open_checkpoint(str(indexed["zoo"] / r["path"])).tensors for r in rows])
    torch.manual_seed(0)
    model = Autoencoder(target, latent=32, weight_stats=stats)
    path = str(indexed["tmp"] / "served-ae.pt")
    save_autoencoder(model, AutoencoderConfig(target=target_config(target), latent=32, weight_stats=stats), path)
    return path


TOKEN = "t0ken-for-writes-" + "x" * 16


@pytest.fixture(scope="module")
def served(ray_session, indexed, tmp_path_factory):
    """The app's arguments: a copy of the indexed tiny zoo (models are added to it), its encoder, an
    autoencoder, a 1 MiB body limit, a token file and the zoo's lineage run."""
    import shutil

    from pipeline.lineage.job import run_lineage

    folder = tmp_path_factory.mktemp("served")
    shutil.copytree(indexed["out"], folder / "index")
    shutil.copytree(indexed["graphs"], folder / "index" / "graphs")
    (folder / "token").write_text(TOKEN + "\n")
    run_lineage([str(indexed["zoo"] / "models")], str(folder / "lineage"), plot=False)
    return {"index": str(folder / "index"), "catalog": indexed["catalog"], "encoder_state": indexed["state"],
            "autoencoders": [_autoencoder(indexed)], "max_body_mib": 1, "token_file": str(folder / "token"),
            "lineage": str(folder / "lineage")}


@pytest.fixture(scope="module")
def server(served):
    from ray import serve

    from serve.app import build_app

    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    serve.run(build_app(served), name="zoo", route_prefix="/")
    yield f"http://127.0.0.1:{PORT}"
    serve.delete("zoo")


def _call(url: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, dict]:
    status, _, data = _raw(url, body, headers)
    return status, json.loads(data)


def _raw(url: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, dict, bytes]:
    """``(status, headers (lower-case names), body)`` of a GET, or a POST of ``body``."""
    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET",
                                     headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


def _multipart(files: dict[str, tuple[str, bytes]]) -> tuple[bytes, dict]:
    """A multipart/form-data body of ``field -> (file name, bytes)`` and its content type header."""
    boundary = "weightzoo-test-boundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
             f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n"
             for field, (name, data) in files.items()]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), {
        "Content-Type": f"multipart/form-data; boundary={boundary}"}


def _tensors(data: bytes) -> dict:
    from safetensors.numpy import load

    return load(data)


def _moved(indexed, row, seed: int) -> bytes:
    """A random group element of a zoo model (the same function), as safetensors bytes."""
    from pipeline.checkpoint import open_checkpoint
    from pipeline.checkpoint.writer import checkpoint_bytes
    from pipeline.graph import build_graph
    from pipeline.testing import random_transform

    ckpt = open_checkpoint(str(indexed["zoo"] / row["path"]))
    return checkpoint_bytes(random_transform(build_graph(ckpt), np.random.default_rng(seed)).tensors, ckpt.metadata)


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


def test_model_metadata_liveness_and_readiness(server, indexed):
    row = indexed["rows"][3]
    status, body = _call(f"{server}/models/{row['model_id']}")
    assert status == 200 and body["model_id"] == row["model_id"] and body["task"] == row["task"]
    assert _call(f"{server}/models/nope")[0] == 404
    assert _call(f"{server}/healthz") == (200, {"status": "ok"})
    status, body = _call(f"{server}/readyz")
    assert status == 200 and body["ready"] and body["models"] == len(indexed["rows"])
    assert body["embedder_version"] == body["encoder_version"]


def test_a_models_duplicates(server, indexed):
    copy = next(r for r in indexed["rows"] if r["duplicate_of"])
    status, body = _call(f"{server}/models/{copy['duplicate_of']}/duplicates")
    assert status == 200 and len(body["groups"]) == 1
    assert {copy["model_id"], copy["duplicate_of"]} <= {m["model_id"] for m in body["groups"][0]["models"]}
    loner = next(r for r in indexed["rows"] if not r["duplicate_of"]
                 and r["model_id"] not in {x["duplicate_of"] for x in indexed["rows"]})
    assert _call(f"{server}/models/{loner['model_id']}/duplicates") == (200, {"query": loner["model_id"], "groups": []})


def test_lineage_of_a_planted_copy(server, indexed):
    copy = next(r for r in indexed["rows"] if r["transform"] == "symmetry")
    status, body = _call(f"{server}/models/{copy['model_id']}/lineage")
    assert status == 200
    edge = next(e for e in body["parents"] + body["children"] if copy["duplicate_of"] in (e["parent"], e["child"]))
    assert edge["type"] == "symmetry" and {edge["parent"], edge["child"]} == {copy["model_id"], copy["duplicate_of"]}
    status, body = _call(f"{server}/models/no-such-model/lineage")
    assert status == 404 and "no-such-model" in body["detail"]


def test_canonicalize_gives_one_network_per_orbit(server, indexed):
    inr = next(r for r in indexed["rows"] if r["family"] == "inr" and not r["duplicate_of"])
    forms = []
    for seed in (1, 2):
        status, headers, data = _raw(f"{server}/canonicalize?filename=mine.safetensors", _moved(indexed, inr, seed))
        assert status == 200 and headers["content-type"] == "application/octet-stream"
        assert "mine.canonical.safetensors" in headers["content-disposition"]
        assert json.loads(headers["x-weightzoo-figures"])["reconstruction_error"] >= 0
        forms.append(_tensors(data))
    assert forms[0].keys() == {"layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias",
                               "layers.2.weight", "layers.2.bias"}
    for name, t in forms[0].items():
        np.testing.assert_allclose(forms[1][name], t, rtol=1e-5, atol=1e-6)
    cnn = next(r for r in indexed["rows"] if r["family"] == "cnn")
    status, body = _call(f"{server}/canonicalize?filename=cnn.safetensors", (indexed["zoo"] / cnn["path"]).read_bytes())
    assert status == 422 and "UnsupportedArchitecture" in body["detail"] and "inr_sine" in body["detail"]


def test_align_recovers_a_planted_element_and_merges(server, indexed):
    row = next(r for r in indexed["rows"] if r["family"] == "mlp" and not r["duplicate_of"])
    original = (indexed["zoo"] / row["path"]).read_bytes()
    body, headers = _multipart({"a": ("a.safetensors", original), "b": ("b.safetensors", _moved(indexed, row, 4))})
    status, answer_headers, data = _raw(f"{server}/align", body, headers)
    assert status == 200 and "b.aligned.safetensors" in answer_headers["content-disposition"]
    assert json.loads(answer_headers["x-weightzoo-figures"])["similarity"] > 1 - 1e-6
    for name, t in _tensors(original).items():
        np.testing.assert_allclose(_tensors(data)[name], t, rtol=1e-4, atol=1e-5)
    status, _, data = _raw(f"{server}/align?alpha=0.5", body, headers)
    assert status == 200 and _tensors(data).keys() == _tensors(original).keys()
    other = next(r for r in indexed["rows"] if r["family"] == "cnn")
    body, headers = _multipart({"a": ("a.safetensors", original),
                                "b": ("cnn.safetensors", (indexed["zoo"] / other["path"]).read_bytes())})
    status, _, data = _raw(f"{server}/align", body, headers)
    assert status == 422 and "cannot be aligned" in json.loads(data)["detail"]
    body, headers = _multipart({"a": ("a.safetensors", original)})
    status, _, data = _raw(f"{server}/align", body, headers)
    assert status == 422 and "'b'" in json.loads(data)["detail"]
    big, headers = _multipart({"a": ("a.safetensors", original), "b": ("b.safetensors", b"\0" * (3 * 2**20))})
    chunked = (big[i:i + 2**16] for i in range(0, len(big), 2**16))  # no Content-Length: capped as it streams
    status, _, data = _raw(f"{server}/align", chunked, headers)
    assert status == 413 and "limit" in json.loads(data)["detail"]
    assert _call(f"{server}/healthz")[0] == 200


def test_map_and_an_uploads_duplicates_and_place(server, indexed):
    status, body = _call(f"{server}/map")
    assert status == 200 and len(body["points"]) == len(indexed["rows"])
    assert all(np.isfinite([p["x"], p["y"]]).all() and p["task"] for p in body["points"])
    row = next(r for r in indexed["rows"] if r["family"] == "mlp" and not r["duplicate_of"])
    point = next(p for p in body["points"] if p["model_id"] == row["model_id"])
    status, found = _call(f"{server}/search?k=3&duplicates=true&position=true", _moved(indexed, row, 7))
    assert status == 200
    assert row["model_id"] in {d["model_id"] for d in found["duplicates"]}  # a moved copy duplicates its parent
    assert all(d["cosine"] > 0.99 and d["distance"] < 1e-3 for d in found["duplicates"])
    np.testing.assert_allclose(found["position"], [point["x"], point["y"]], atol=1e-3)  # the same function, the same place
    status, other = _call(f"{server}/search?k=3&duplicates=true", (indexed["zoo"] / row["path"]).read_bytes())
    independent = next(r for r in indexed["rows"] if r["family"] == "mlp" and r["model_id"] != row["model_id"]
                       and row["model_id"] not in (r["duplicate_of"], None) and not r["duplicate_of"])
    assert independent["model_id"] not in {d["model_id"] for d in other["duplicates"]}


def _browser(tmp_path):
    """Debian's Chromium, headless, driven by its ChromeDriver (nothing downloaded)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1200,900", f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))


@pytest.mark.skipif(not os.path.exists("/usr/bin/chromedriver"), reason="Debian's chromium-driver is not installed "
                                                                        "(scripts/setup.sh installs it)")
def test_search_page_in_a_real_browser(server, indexed, tmp_path):
    """The page at / in headless Chromium: choosing a checkpoint shows its nearest models (its
    parent first), its near-duplicates and its place on the map; a screenshot is kept."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    row = next(r for r in indexed["rows"] if r["family"] == "cnn" and not r["duplicate_of"])
    upload = tmp_path / "dropped.safetensors"
    upload.write_bytes(_moved(indexed, row, 11))
    browser = _browser(tmp_path)
    try:
        browser.get(f"{server}/")
        WebDriverWait(browser, 30).until(lambda b: "models indexed" in b.find_element(By.ID, "size").text)
        before = browser.find_element(By.ID, "map").screenshot_as_png
        browser.execute_script("document.getElementById('file').hidden = false")
        browser.find_element(By.ID, "file").send_keys(str(upload))
        WebDriverWait(browser, 60).until(lambda b: "nearest models" in b.find_element(By.ID, "status").text)
        cells = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
                 for tr in browser.find_elements(By.CSS_SELECTOR, "#results tbody tr")]
        assert len(cells) == 10 and cells[0][1] == row["model_id"] and float(cells[0][5]) > 0.999
        assert row["model_id"] in browser.find_element(By.ID, "duplicates").text
        assert browser.find_element(By.ID, "map").screenshot_as_png != before  # the upload's mark drawn
        shot = tmp_path / "search-page.png"
        browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
    finally:
        browser.quit()


def _post_model(server, data: bytes, filename: str, token: str | None = TOKEN, **query) -> tuple[int, dict]:
    params = "&".join(f"{k}={v}" for k, v in {"filename": filename, **query}.items())
    return _call(f"{server}/models?{params}", data, {"Authorization": f"Bearer {token}"} if token else {})


def _index_files(served) -> dict[str, bytes]:
    folder = os.path.join(served["index"], "index")
    return {name: open(os.path.join(folder, name), "rb").read() for name in sorted(os.listdir(folder))}


def test_writes_need_the_token_and_bad_uploads_change_nothing(server, served):
    import models

    state = models.sklearn_mlp(seed=3, max_iter=20)[1]
    buffer = io.BytesIO()
    torch.save(state, buffer)
    before = _index_files(served)
    status, body = _post_model(server, buffer.getvalue(), "mine.pt", token=None)
    assert status == 401 and "bearer" in body["detail"]
    assert _raw(f"{server}/models?filename=mine.pt", buffer.getvalue())[1]["www-authenticate"] == "Bearer"
    status, body = _post_model(server, buffer.getvalue(), "mine.pt", token="not-the-token")
    assert status == 403 and TOKEN not in json.dumps(body)
    evil = io.BytesIO()
    torch.save({"w": torch.ones(2), "evil": _RunsCode()}, evil)
    status, body = _post_model(server, evil.getvalue(), "evil.pt")
    assert status == 422 and "UnsafeCheckpoint" in body["detail"] and not os.path.exists("/tmp/weightzoo-served-pwned")
    status, body = _post_model(server, b"\x10\x00\x00\x00\x00\x00\x00\x00{oops", "bad.safetensors")
    assert status == 422 and "CorruptCheckpoint" in body["detail"]
    assert _post_model(server, b"\0" * (2 * 2**20), "big.safetensors")[0] == 413
    assert _index_files(served) == before  # nothing written
    assert _call(f"{server}/healthz")[0] == 200


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_an_added_model_is_found_next_and_survives_a_restart(server, served, indexed):
    """``POST /models`` with a scikit-learn MLP (a bare state dict): 201, found by the next queries
    by id and by upload, 200 when added again; after the app restarts (now with reads protected)
    it is still there; restarted with another encoder than the index's, it is not ready and
    refuses uploads with 409, writing nothing; the token is in no log."""
    from ray import serve

    import models
    from serve.app import build_app

    buffer = io.BytesIO()
    torch.save(models.sklearn_mlp(seed=5, max_iter=20)[1], buffer)
    data = buffer.getvalue()
    count = _call(f"{server}/health")[1]["models"]
    status, body = _post_model(server, data, "sk-digits.pt", activation="relu")
    assert status == 201 and body["added"] and body["model"]["file"] == "sk-digits.pt", body
    cid = body["model"]["content_id"]
    assert _call(f"{server}/health")[1]["models"] == count + 1
    status, found = _call(f"{server}/search?k=1&activation=relu", data)
    assert status == 200 and found["results"][0]["content_id"] == cid and found["results"][0]["score"] > 1 - 1e-5
    assert _call(f"{server}/models/sk-digits.pt/neighbors?k=2")[0] == 200
    status, again = _post_model(server, data, "another-name.pt", activation="relu")
    assert status == 200 and not again["added"] and again["model"]["content_id"] == cid
    assert _call(f"{server}/health")[1]["models"] == count + 1

    serve.delete("zoo")
    serve.run(build_app({**served, "protect_reads": True}), name="zoo", route_prefix="/")
    assert _call(f"{server}/health")[0] == 401 and _call(f"{server}/healthz")[0] == 200
    authorized = {"Authorization": f"Bearer {TOKEN}"}
    status, health = _call(f"{server}/health", headers=authorized)
    assert status == 200 and health["models"] == count + 1
    status, model = _call(f"{server}/models/{cid}", headers=authorized)
    assert status == 200 and model["file"] == "sk-digits.pt"

    other = small_encoder_state(os.path.join(os.path.dirname(served["index"]), "other.pt"), 1)
    before = _index_files(served)
    serve.delete("zoo")
    serve.run(build_app({**served, "encoder_state": other}), name="zoo", route_prefix="/")
    status, ready = _call(f"{server}/readyz")
    assert status == 503 and "embeddings" in ready["reason"]
    status, body = _call(f"{server}/search?activation=relu", data)
    assert status == 409 and "embedded by" in body["detail"]
    status, body = _post_model(server, data, "sk-digits.pt")
    assert status == 409 and "the encoder is" in body["detail"]
    assert _index_files(served) == before and _call(f"{server}/models/{cid}")[0] == 200
    logs = ray_logs()
    assert logs and not any(TOKEN in open(p, errors="ignore").read() for p in logs)


def ray_logs() -> list[str]:
    """This Ray session's log files."""
    import ray

    folder = os.path.join(ray._private.worker._global_node.get_session_dir_path(), "logs")
    return [os.path.join(d, f) for d, _, files in os.walk(folder) for f in files]
