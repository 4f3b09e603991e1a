"""The HTTP ingress deployment (FastAPI): reads requests, hands the work to the other deployments
through their handles, and answers. It does no CPU work of its own, so its event loop stays free.

Checkpoints go in as the raw request body (``curl --data-binary @m.safetensors``), or for ``/align``
as the multipart fields ``a`` and ``b``. Bodies over ``max_body_mib`` are refused with 413 while
they stream in. Every refusal is a 4xx with the reason. Bearer tokens: :mod:`serve.auth`.
"""

import json
import pathlib

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import HTMLResponse
from ray import serve

from pipeline.search import DuplicateThresholds, Filters
from serve import auth
from serve.uploads import Refusal, Upload, safe_name


async def _reads(request: Request) -> None:  # async: checked inline, not on a worker thread
    auth.GUARD.check(False, request.url.path, request.headers.get("authorization"))


async def _writes(request: Request) -> None:
    auth.GUARD.check(True, request.url.path, request.headers.get("authorization"))


api = FastAPI(title="weightzoo", description="Search a model zoo by what the models compute; canonicalize, "
                                             "align and merge checkpoints.", dependencies=[Depends(_reads)])
DUPLICATES = DuplicateThresholds()
SAFETENSORS = "application/octet-stream"
PAGE = pathlib.Path(__file__).with_name("page.html")


def _answer(result):
    """A deployment's answer, or its refusal as an HTTP error."""
    if isinstance(result, Refusal):
        raise HTTPException(result.status, result.detail)
    return result


def _json(answer) -> Response:
    """A JSON answer, encoded directly (FastAPI's generic encoder costs ten times as much)."""
    return Response(json.dumps(answer), media_type="application/json")


def _hints(activation: str | None, family: str | None, num_heads: int | None) -> dict:
    from pipeline.checkpoint import CheckpointError
    from pipeline.graph.hints import check_hints

    try:
        return check_hints({"activation": activation, "family": family, "num_heads": num_heads}, "query parameters")
    except CheckpointError as exc:
        raise HTTPException(422, exc.reason) from None


def _download(data: bytes, filename: str, figures: dict) -> Response:
    """A checkpoint as a download, its figures in the ``X-Weightzoo-Figures`` header (JSON)."""
    return Response(data, media_type=SAFETENSORS,
                    headers={"Content-Disposition": f'attachment; filename="{safe_name(filename)}"',
                             "X-Weightzoo-Figures": json.dumps(figures)})


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=256)
@serve.ingress(api)
class Ingress:
    """The handles of the other deployments (``canonicalizer``: ``None`` when no autoencoder is
    loaded) and the largest checkpoint accepted, in MiB."""

    def __init__(self, embedder, searcher, aligner, registrar, canonicalizer=None, max_body_mib: float = 256.0,
                 token_env: str | None = None, token_file: str | None = None, protect_reads: bool = False):
        self.embedder, self.searcher, self.aligner, self.canonicalizer = embedder, searcher, aligner, canonicalizer
        self.registrar = registrar
        self.max_body = int(max_body_mib * 2**20)
        self.encoder_version: str | None = None
        auth.GUARD.configure(auth.read_token(token_env, token_file), protect_reads)
        self.page = PAGE.read_text(encoding="utf-8")

    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page(self) -> HTMLResponse:
        """The search page: drop a checkpoint, see its nearest models, near-duplicates and place on the map."""
        return HTMLResponse(self.page)

    @api.get("/healthz")
    async def healthz(self) -> dict:
        """Liveness: the ingress answers."""
        return {"status": "ok"}

    @api.get("/readyz")
    async def readyz(self) -> Response:
        """Readiness: the index and the encoder answer, and the encoder is the index's (503 otherwise,
        with the reason)."""
        try:
            status = await self.searcher.status.remote()
            version = await self.embedder.version.remote()
        except Exception as exc:  # noqa: BLE001 -- any failure of a deployment means not ready
            return Response(json.dumps({"ready": False, "reason": f"{type(exc).__name__}: {exc}"}), 503,
                            media_type="application/json")
        ready = version == status["encoder_version"]
        reason = {} if ready else {"reason": f"the index holds {status['encoder_version']!r} embeddings; the "
                                             f"server's encoder is {version!r}"}
        return Response(json.dumps({"ready": ready, **reason, **status, "embedder_version": version}),
                        200 if ready else 503, media_type="application/json")

    @api.get("/health")
    async def health(self) -> dict:
        """Index size and encoder version."""
        return await self.searcher.status.remote()

    @api.get("/models/{model}")
    async def model(self, model: str) -> Response:
        """An indexed model's metadata (by content id, model id or file name)."""
        return _json(_answer(await self.searcher.model.remote(model)))

    @api.get("/models/{model}/neighbors")
    async def neighbors(self, model: str, k: int = Query(10, ge=1, le=1000), task: str | None = None,
                        family: str | None = None, min_params: int | None = None,
                        max_params: int | None = None) -> Response:
        """The ``k`` indexed models nearest to an indexed model, filtered."""
        filters = Filters(task, family, min_params, max_params)
        return _json({"query": model, "results": _answer(await self.searcher.neighbors.remote(model, k, filters))})

    @api.post("/search")
    async def search(self, request: Request, k: int = Query(10, ge=1, le=1000), task: str | None = None,
                     family: str | None = None, min_params: int | None = None, max_params: int | None = None,
                     filename: str = "upload", activation: str | None = None, model_family: str | None = None,
                     num_heads: int | None = None, duplicates: bool = False, position: bool = False) -> dict:
        """The ``k`` indexed models nearest to the uploaded checkpoint, filtered; ``filename`` names
        the upload in errors, ``activation``, ``model_family``, ``num_heads`` are its hints. With
        ``duplicates``, also the indexed models that are near-duplicates of it (with the evidence);
        with ``position``, where it falls on the zoo's map (``GET /map``)."""
        filters = Filters(task, family, min_params, max_params)
        _answer(await self.searcher.check.remote(filters))
        upload = await self._upload(request, filename, _hints(activation, model_family, num_heads))
        if duplicates:
            prints = _answer(await self.embedder.prints.remote(upload))
            vector = prints.vector
        else:
            vector = _answer(await self.embedder.embed.remote(upload))
        results = await self.searcher.nearest.remote(vector, await self._version(), k, filters)
        answer = {"query": safe_name(filename), "results": _answer(results)}
        if duplicates:
            answer["duplicates"] = await self.searcher.duplicates_of.remote(prints)
        if position:
            answer["position"] = await self.searcher.position.remote(vector)
        return answer

    @api.post("/models", dependencies=[Depends(_writes)], status_code=201,
              responses={200: {"description": "the model was indexed already"}})
    async def add_model(self, request: Request, response: Response, filename: str = "upload",
                        activation: str | None = None, model_family: str | None = None,
                        num_heads: int | None = None) -> dict:
        """Add the uploaded checkpoint to the index (bearer token required): converted, embedded
        and stored; found by the next query. Idempotent by content id: 201 when added, 200 when it
        was indexed already. Returns ``added`` and the model's metadata."""
        upload = await self._upload(request, filename, _hints(activation, model_family, num_heads))
        added = _answer(await self.registrar.add.remote(upload))
        response.status_code = 201 if added["added"] else 200
        return {"added": added["added"], "model": _answer(await self.searcher.model.remote(added["content_id"]))}

    @api.get("/map")
    async def map(self) -> dict:
        """The zoo on a 2-D map (the embeddings' first two principal axes): each model's content
        id, model id, task, family, ``x`` and ``y``."""
        return await self.searcher.map.remote()

    @api.post("/embed")
    async def embed(self, request: Request, filename: str = "upload", activation: str | None = None,
                    family: str | None = None, num_heads: int | None = None) -> dict:
        """The uploaded checkpoint's embedding by the index's encoder."""
        upload = await self._upload(request, filename, _hints(activation, family, num_heads))
        vector = _answer(await self.embedder.embed.remote(upload))
        return {"encoder_version": await self._version(), "vector": vector.tolist()}

    @api.get("/duplicates")
    async def duplicates(self, min_cosine: float = Query(DUPLICATES.min_cosine, ge=-1, le=1),
                         max_distance: float = Query(DUPLICATES.max_distance, ge=0),
                         max_wiring_distance: float = Query(DUPLICATES.max_wiring_distance, ge=0),
                         max_output_distance: float = Query(DUPLICATES.max_output_distance, ge=0)) -> dict:
        """Near-duplicate groups of the index, each pair with its evidence."""
        thresholds = DuplicateThresholds(min_cosine, max_distance, max_wiring_distance, max_output_distance)
        return {"groups": _answer(await self.searcher.duplicates.remote(thresholds))}

    @api.get("/models/{model}/lineage")
    async def lineage(self, model: str) -> Response:
        """The model's parents, children, ancestors and descendants in the served lineage run, each
        an edge (parent, child, type, confidence)."""
        return _json(_answer(await self.searcher.lineage.remote(model)))

    @api.get("/models/{model}/duplicates")
    async def model_duplicates(self, model: str) -> dict:
        """The near-duplicate group of an indexed model (empty when it has none)."""
        return {"query": model, "groups": _answer(await self.searcher.duplicates.remote(DUPLICATES, model))}

    @api.post("/canonicalize")
    async def canonicalize(self, request: Request, filename: str = "upload", activation: str | None = None,
                           family: str | None = None) -> Response:
        """The uploaded checkpoint's canonical network (safetensors download); its reconstruction
        error and the autoencoder in ``X-Weightzoo-Figures``."""
        if self.canonicalizer is None:
            raise HTTPException(404, "this server loads no autoencoder (start it with autoencoders=[...])")
        upload = await self._upload(request, filename, _hints(activation, family, None))
        data, figures = _answer(await self.canonicalizer.canonicalize.remote(upload))
        return _download(data, f"{safe_name(filename).removesuffix('.safetensors')}.canonical.safetensors", figures)

    @api.post("/align")
    async def align(self, request: Request, alpha: float | None = Query(None, ge=0, le=1),
                    activation: str | None = None, family: str | None = None) -> Response:
        """Multipart fields ``a`` and ``b`` (checkpoint files): B aligned to A by weight matching, or
        with ``alpha`` the model at ``alpha`` on the path from A to aligned B (safetensors
        download); the matching's objective and similarity in ``X-Weightzoo-Figures``."""
        hints = _hints(activation, family, None)
        body = await self._body(request, 2 * self.max_body, "request")

        async def replay() -> dict:
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await Request(request.scope, replay).form(max_files=2, max_fields=2)
        except Exception as exc:  # noqa: BLE001 -- a malformed form is the client's
            raise HTTPException(400, f"expected multipart/form-data with files a and b: {exc}") from None
        uploads = []
        for field in ("a", "b"):
            part = form.get(field)
            if part is None or isinstance(part, str):
                raise HTTPException(422, f"multipart field {field!r} must be a checkpoint file")
            data = await part.read(self.max_body + 1)
            if len(data) > self.max_body:
                raise HTTPException(413, f"{field}: checkpoint is over the {self.max_body}-byte limit")
            if not data:
                raise HTTPException(400, f"{field}: empty file")
            uploads.append(Upload(data, part.filename or field, hints))
        data, figures = _answer(await self.aligner.align.remote(*uploads, alpha))
        name = safe_name(uploads[1].name).removesuffix(".safetensors")
        return _download(data, f"{name}.{'merged' if alpha is not None else 'aligned'}.safetensors", figures)

    async def _version(self) -> str:
        """The embedder's encoder version (fixed for the deployment's life: asked once)."""
        if self.encoder_version is None:
            self.encoder_version = await self.embedder.version.remote()
        return self.encoder_version

    async def _upload(self, request: Request, filename: str, hints: dict) -> Upload:
        """The request body as an upload; 413 as soon as it is over the limit, 400 when empty."""
        data = await self._body(request, self.max_body, "checkpoint")
        if not data:
            raise HTTPException(400, "empty request body: send the checkpoint's bytes")
        return Upload(data, filename, hints)

    @staticmethod
    async def _body(request: Request, limit: int, what: str) -> bytes:
        """The request body, read as it streams in (chunked or not); 413 as soon as it is over
        ``limit`` bytes, or at once when its declared length is."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise HTTPException(413, f"{what} of {declared} bytes is over the {limit}-byte limit")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPException(413, f"{what} is over the {limit}-byte limit")
            chunks.append(chunk)
        return b"".join(chunks)
