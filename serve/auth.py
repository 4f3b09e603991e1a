"""Bearer tokens: who may write to the index (``POST /models``) and, with ``protect_reads``, who may
read it.

The token is configured where the server starts, never in the app's arguments (which Serve shows
in its config and dashboard): the environment variable named by ``token_env`` (default
``WEIGHTZOO_TOKEN``) or a file named by ``token_file`` (a mounted secret; the file wins). It is never
logged. Requests carry it as ``Authorization: Bearer <token>``: 401 without one, 403 with a wrong
one. With no token configured, writes are refused (403) and reads are open.
"""
from __future__ import annotations

import hmac
import os

from fastapi import HTTPException

#: the environment variable holding the token unless the app names another
TOKEN_ENV = "WEIGHTZOO_TOKEN"
#: paths anyone may read, whatever ``protect_reads`` says: liveness, readiness, the page, the API docs
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/", "/docs", "/openapi.json"})


def read_token(token_env: str | None = TOKEN_ENV, token_file: str | None = None) -> str | None:
    """The configured token (``None``: none). Raises ``ValueError`` for a token file that cannot be
    read or is empty (a server meant to be protected must not start open)."""
    if token_file:
        try:
            with open(token_file, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as exc:
            raise ValueError(f"token file {token_file}: {exc.strerror}") from None
        if not token:
            raise ValueError(f"token file {token_file} is empty")
        return token
    return os.environ.get(token_env or TOKEN_ENV, "").strip() or None


class Guard:
    """Checks a request's bearer token against the configured one (none until :meth:`configure`)."""

    def __init__(self):
        self._token: str | None = None
        self.protect_reads = False

    def configure(self, token: str | None, protect_reads: bool = False) -> None:
        if protect_reads and not token:
            raise ValueError("protect_reads needs a token (set the token's environment variable or file)")
        self._token, self.protect_reads = token, protect_reads

    def check(self, write: bool, path: str, authorization: str | None) -> None:
        """Raise the 401 or 403 a request deserves (``write``: it changes the index)."""
        if not write and (not self.protect_reads or path in PUBLIC_PATHS):
            return
        if self._token is None:
            raise HTTPException(403, "this server accepts no writes: it was started without a token")
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise HTTPException(401, "this needs a bearer token (Authorization: Bearer <token>)",
                                headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(given.strip().encode(), self._token.encode()):
            raise HTTPException(403, "the bearer token is not this server's")


#: the replica's guard, configured by the ingress it runs. It lives here, not on the ingress or in
#: ``api.state``: Serve runs copies of the ingress class and its FastAPI app, while this module is
#: the same one for both in the replica.
GUARD = Guard()
