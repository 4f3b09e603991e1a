"""Serve load and fault benchmark, on 127.0.0.1 only: a trivial Serve endpoint (the stack's own limit
on this machine) against the app's ``GET /models/{id}/neighbors`` and ``POST /search`` (an uploaded
checkpoint) at concurrency 1, 16 and 64; then a replica of the search deployment killed during load.

    python bench/serve_load.py --index data/index-shipped --checkpoints data/zoo/models --catalog data/zoo/catalog.parquet
    python bench/serve_load.py ... --seconds 5 --levels 1 16     # quicker

The index is ``weightzoo index``'s output (its graphs in ``<index>/graphs``; built here from
``--checkpoints`` with the shipped encoder when missing). Clients are threads, each with one
keep-alive connection, for ``--seconds`` per level; they share the machine's cores with the server.
Reported: requests per second, p50 and p99 latency, 5xx and failed requests; for the kill, the
5xx outside the kill window, the time from the kill until the first of ``RECOVERED_RUN`` successes in
a row (by completion, among requests sent after it), and the replicas' RSS growth over the run. Prints a table, then one JSON line.
"""
from __future__ import annotations

import argparse
import http.client
import json
import threading
import time
from dataclasses import dataclass, field

import numpy as np

PORT = 8477
#: a run of this many successful requests in a row after the kill counts as recovered
RECOVERED_RUN = 20
#: the kill comes this long into its load phase, which lasts at least KILL_PHASE_S
KILL_AFTER_S = 2.0
KILL_PHASE_S = 30.0


@dataclass
class Load:
    """What one load level saw: ``(start time, seconds, status)`` per request (status 0: no answer)."""
    requests: list[tuple[float, float, int]] = field(default_factory=list)

    def summary(self, seconds: float) -> dict:
        times = np.array([s for _, s, _ in self.requests]) * 1e3
        statuses = np.array([c for *_, c in self.requests])
        return {"rps": len(self.requests) / seconds, "p50_ms": float(np.percentile(times, 50)),
                "p99_ms": float(np.percentile(times, 99)), "errors_5xx": int((statuses >= 500).sum()),
                "failed": int(((statuses >= 400) | (statuses == 0)).sum()), "requests": len(self.requests)}


def run_load(make_request, concurrency: int, seconds: float) -> Load:
    """``concurrency`` threads calling ``make_request(connection, i)`` (-> HTTP status) for ``seconds``."""
    load, lock, stop = Load(), threading.Lock(), time.perf_counter() + seconds

    def client(worker: int):
        connection = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
        i = worker
        while time.perf_counter() < stop:
            started = time.perf_counter()
            try:
                status = make_request(connection, i)
            except (OSError, http.client.HTTPException):
                status = 0
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
            with lock:
                load.requests.append((started, time.perf_counter() - started, status))
            i += concurrency
        connection.close()

    threads = [threading.Thread(target=client, args=(w,)) for w in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return load


def _get(path_of):
    def request(connection, i):
        connection.request("GET", path_of(i))
        response = connection.getresponse()
        response.read()
        return response.status
    return request


def _post(path: str, body: bytes):
    def request(connection, i):
        connection.request("POST", path, body=body, headers={"Content-Type": "application/octet-stream"})
        response = connection.getresponse()
        response.read()
        return response.status
    return request


def _replica_pids(deployment: str) -> list[int]:
    """The processes of the app's replicas of ``deployment`` (Ray titles them ``ray::ServeReplica:<app>:<name>``)."""
    import psutil

    title = f"ServeReplica:zoo:{deployment}"
    return [p.pid for p in psutil.process_iter(["cmdline"]) if any(title in part for part in p.info["cmdline"] or ())]


def _rss(pids: list[int]) -> int:
    import psutil

    return sum(psutil.Process(p).memory_info().rss for p in pids if psutil.pid_exists(p))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", required=True, help="weightzoo index's output (built from --checkpoints if missing)")
    parser.add_argument("--checkpoints", default="data/zoo/models", help="what to index when --index is missing")
    parser.add_argument("--catalog", default=None)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--seconds", type=float, default=10.0, help="per load level")
    args = parser.parse_args(argv)

    import os

    from serve.app import build_app  # first: the app's package sets Ray Serve's throughput mode

    import ray
    from fastapi import FastAPI
    from ray import serve

    from pipeline.search import ZooSearch
    from pipeline.storage import exists, join

    if not exists(join(args.index, "index")):
        from pipeline.commands import embed_zoo

        embed_zoo.main([args.checkpoints, "--out", args.index])
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    trivial = FastAPI()

    @serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=256)  # as the app's ingress
    @serve.ingress(trivial)
    class Trivial:
        @trivial.get("/")
        async def ok(self) -> dict:
            return {"ok": True}

    serve.run(Trivial.bind(), name="trivial", route_prefix="/trivial")
    serve.run(build_app({"index": args.index, "catalog": args.catalog}), name="zoo", route_prefix="/")
    search = ZooSearch(args.index, join(args.index, "graphs"), args.catalog)
    ids = list(search.meta)
    with open(os.path.join(args.checkpoints, sorted(os.listdir(args.checkpoints))[0]), "rb") as f:
        upload = f.read()

    targets = {"trivial": _get(lambda i: "/trivial/"),
               "neighbors": _get(lambda i: f"/models/{ids[i % len(ids)]}/neighbors?k=10"),
               "search_upload": _post("/search?k=10", upload)}
    rows, figures = [], {}
    rss_start = _rss(_replica_pids("Searcher") + _replica_pids("Embedder") + _replica_pids("Ingress"))
    for name, request in targets.items():
        run_load(request, 4, 1.0)  # warm-up
        for level in args.levels:
            summary = run_load(request, level, args.seconds).summary(args.seconds)
            rows.append((name, level, summary))
            figures[f"{name}_rps_c{level}"] = summary["rps"]
            figures[f"{name}_p99_ms_c{level}"] = summary["p99_ms"]

    # a searcher replica killed during neighbors load at concurrency 16
    kill_at = {}

    def killer():
        time.sleep(KILL_AFTER_S)
        pid = _replica_pids("Searcher")[0]
        kill_at["t"] = time.perf_counter()
        os.kill(pid, 9)

    thread = threading.Thread(target=killer)
    thread.start()
    load = run_load(targets["neighbors"], 16, max(KILL_PHASE_S, 3 * args.seconds))
    thread.join()
    ordered = sorted(load.requests)
    # recovered: when the first of RECOVERED_RUN successes in a row (by completion) among the
    # requests sent after the kill completed
    recovered, run_start, streak = None, None, 0
    for done, status in sorted((s + d, c) for s, d, c in ordered if s >= kill_at["t"]):
        if status != 200:
            run_start, streak = None, 0
            continue
        run_start = done if streak == 0 else run_start
        streak += 1
        if streak == RECOVERED_RUN:
            recovered = run_start - kill_at["t"]
            break
    window_end = kill_at["t"] + (recovered if recovered is not None else float("inf"))
    outside = sum(1 for s, d, c in ordered if c >= 500 and not (kill_at["t"] <= s + d and s <= window_end))
    total = sum(r[2]["requests"] for r in rows) + len(ordered)
    failed = sum(r[2]["failed"] for r in rows) + sum(1 for *_, c in ordered if c >= 400 or c == 0)
    rss_end = _rss(_replica_pids("Searcher") + _replica_pids("Embedder") + _replica_pids("Ingress"))

    print(f"{'endpoint':<16}{'clients':>8}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'5xx':>6}{'failed':>8}")
    for name, level, s in rows:
        print(f"{name:<16}{level:>8}{s['rps']:>10.1f}{s['p50_ms']:>10.1f}{s['p99_ms']:>10.1f}{s['errors_5xx']:>6}{s['failed']:>8}")
    print(f"kill: recovered in {recovered if recovered is None else round(recovered, 2)} s, "
          f"5xx outside the kill window {outside}, failed {failed} of {total}")
    c16 = lambda key: figures.get(f"{key}_c16")  # noqa: E731
    result = {
        "trivial_rps_c16": c16("trivial_rps"), "trivial_p99_ms_c16": c16("trivial_p99_ms"),
        "neighbors_rps_c16": c16("neighbors_rps"), "neighbors_p99_ms_c16": c16("neighbors_p99_ms"),
        "search_upload_rps_c16": c16("search_upload_rps"), "search_upload_rps_c1": figures.get("search_upload_rps_c1"),
        "neighbors_vs_trivial_rps_c16": (c16("neighbors_rps") or 0) / max(c16("trivial_rps") or 1e-9, 1e-9),
        "errors_5xx_outside_kill": outside, "failed_fraction": failed / max(total, 1),
        "recovery_s": recovered, "rss_growth": (rss_end - rss_start) / max(rss_start, 1), **figures}
    print(json.dumps(result))
    serve.shutdown()
    return result


if __name__ == "__main__":
    main()
