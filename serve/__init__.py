"""The Ray Serve app (:mod:`serve.app`)."""
