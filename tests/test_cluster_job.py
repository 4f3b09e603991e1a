"""The cluster path, as the README gives it: a real Ray head (``ray start --head``) beside the test
session's own cluster, ``jobs/embed_zoo.py`` submitted with ``ray job submit --working-dir .`` on the
tiny zoo (absolute paths: the upload leaves out git-ignored data), the index it wrote checked, the
head stopped."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def head():
    """A Ray head in its own process group (``ray start --block``), with the project's virtual
    environment first on its PATH, as the README says; its dashboard address. Stopped by killing
    that group, which leaves the test session's cluster alone (``ray stop`` would not)."""
    import shutil
    import tempfile

    port, dashboard = _free_port(), _free_port()
    temp = tempfile.mkdtemp(prefix="rayhead-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "RAY_AUTH_MODE": "disabled"}
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", f"--port={port}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--num-cpus=2", "--disable-usage-stats",
         f"--dashboard-agent-listen-port={_free_port()}",  # the session's own cluster holds the default
         f"--temp-dir={temp}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{address}/api/version", timeout=2)
                break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail("the Ray head's dashboard never answered")
        yield address, env
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
        shutil.rmtree(temp, ignore_errors=True)


def test_ray_job_submit_runs_embed_zoo_on_a_real_head(head, tiny_zoo, tmp_path):
    from pipeline.search import ModelIndex

    address, env = head
    folder, catalog = tiny_zoo
    out = tmp_path / "index"
    for _ in range(10):  # the head's job agent registers a few seconds after its dashboard answers
        result = subprocess.run(
            ["ray", "job", "submit", "--address", address, "--working-dir", str(ROOT), "--",
             "python", "jobs/embed_zoo.py", str(folder / "models"), "--out", str(out)],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
        if "No available agent" not in result.stderr:
            break
        time.sleep(2)
    assert result.returncode == 0 and "succeeded" in result.stdout, result.stdout[-3000:] + result.stderr[-3000:]
    index = ModelIndex.load(str(out / "index"))
    assert len(index) == catalog.num_rows and index.encoder_version.startswith("scale_gmn@")
