"""The weightzoo Ray Serve app (:mod:`serve.app`).

Importing this package puts Ray Serve's throughput-optimized mode (:data:`THROUGHPUT_ENV`) in the
environment, where it is not set otherwise: each replica runs user code and its handles' router on
its own event loop (no hand-offs between threads), buffers request logs, and handles call
deployments over gRPC (neighbour lookups at 16 clients: about 1.25x the requests/s of the default).
Ray reads it as it imports Ray Serve and as its processes start, so the app's package is imported
first (the ``weightzoo serve`` command, the tests and the load benchmark do); on a cluster, set it
in the cluster's environment.
"""
import os

THROUGHPUT_ENV = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}

for _name, _value in THROUGHPUT_ENV.items():
    os.environ.setdefault(_name, _value)
