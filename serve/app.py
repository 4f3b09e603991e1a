"""Ray Serve app: HTTP queries over an indexed zoo (the output of weightzoo index).

    weightzoo serve --index my-index                      # after weightzoo index: on 127.0.0.1:8000 until Ctrl-C
    weightzoo serve --index data/index --graphs data/graphs --catalog data/zoo/catalog.parquet \\
        --encoder-state runs/encoders/scale_gmn.pt

Endpoints (JSON out; checkpoints go in as the raw request body, e.g. ``curl --data-binary @m.safetensors``):

=======  =================================  ==========================================================
GET      /health                            index size and encoder version
GET      /models/{model}/neighbors          top-k by model (content id, model id or file name);
                                            query: k, task, family, min_params, max_params
POST     /search                            top-k by an uploaded checkpoint; same query parameters
                                            plus ``filename`` (names the upload in errors) and the
                                            upload's hints ``activation``, ``model_family``,
                                            ``num_heads`` (see pipeline.graph.hints)
POST     /embed                             the uploaded checkpoint's embedding; query: the hints
GET      /duplicates                        near-duplicate groups, each pair with its evidence;
                                            query: min_cosine, max_distance, max_wiring_distance,
                                            max_output_distance
=======  =================================  ==========================================================

Bad input gets a 4xx with the reason: 400 (empty body), 404 (unknown model), 409 (encoder version
mismatch), 413 (body over ``max_body_mib``), 422 (not a checkpoint, corrupt, unsafe or unsupported,
invalid parameters, a task or family filter no indexed model has: the reply lists those it has). Uploads are parsed by our own validating readers (never unpickled).
"""

import argparse
import os
import tempfile

from fastapi import FastAPI, HTTPException, Query, Request
from ray import serve

from pipeline.encoders.state import DEFAULT_ENCODER
from pipeline.search.duplicates import DuplicateThresholds

api = FastAPI(title="weightzoo")
DUPLICATES = DuplicateThresholds()


def _safe_name(filename: str) -> str:
    name = os.path.basename(filename.replace("\\", "/")).strip() or "upload"
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)[:128]


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=16)
@serve.ingress(api)
class ZooAPI:
    def __init__(self, index: str, graphs: str, catalog: str | None = None, encoder_state: str | None = None,
                 max_body_mib: float = 256.0):
        import torch

        from pipeline.search import ZooSearch

        torch.set_num_threads(1)
        self.search = ZooSearch(index, graphs, catalog, encoder_state)
        self.max_body = int(max_body_mib * 2**20)

    @api.get("/health")
    def health(self) -> dict:
        return {"models": len(self.search.index), "encoder_version": self.search.index.encoder_version}

    @api.get("/models/{model}/neighbors")
    def neighbors(self, model: str, k: int = Query(10, ge=1, le=1000), task: str | None = None,
                  family: str | None = None, min_params: int | None = None, max_params: int | None = None) -> dict:
        from pipeline.search import Filters, UnknownFilterValue

        try:
            results = self.search.by_id(model, k, Filters(task, family, min_params, max_params))
        except KeyError as exc:
            raise HTTPException(404, str(exc.args[0])) from None
        except UnknownFilterValue as exc:
            raise HTTPException(422, str(exc)) from None
        return {"query": model, "results": results}

    @api.post("/search")
    async def search_by_file(self, request: Request, k: int = Query(10, ge=1, le=1000), task: str | None = None,
                             family: str | None = None, min_params: int | None = None,
                             max_params: int | None = None, filename: str = "upload",
                             activation: str | None = None, model_family: str | None = None,
                             num_heads: int | None = None) -> dict:
        from pipeline.search import Filters, UnknownFilterValue

        filters = Filters(task, family, min_params, max_params)
        try:
            self.search.check(filters)
        except UnknownFilterValue as exc:
            raise HTTPException(422, str(exc)) from None
        vector = await self._with_upload(request, filename, {"activation": activation, "family": model_family,
                                                             "num_heads": num_heads})
        return {"query": _safe_name(filename), "results": self.search.search_vector(vector, k, filters)}

    @api.post("/embed")
    async def embed(self, request: Request, filename: str = "upload", activation: str | None = None,
                    family: str | None = None, num_heads: int | None = None) -> dict:
        vector = await self._with_upload(request, filename, {"activation": activation, "family": family,
                                                             "num_heads": num_heads})
        return {"encoder_version": self.search.index.encoder_version, "vector": vector.tolist()}

    @api.get("/duplicates")
    def duplicates(self, min_cosine: float = Query(DUPLICATES.min_cosine, ge=-1, le=1),
                   max_distance: float = Query(DUPLICATES.max_distance, ge=0),
                   max_wiring_distance: float = Query(DUPLICATES.max_wiring_distance, ge=0),
                   max_output_distance: float = Query(DUPLICATES.max_output_distance, ge=0)) -> dict:
        groups = self.search.near_duplicates(DuplicateThresholds(min_cosine, max_distance, max_wiring_distance,
                                                                 max_output_distance))
        return {"groups": [{"models": g["models"], "pairs": g["pairs"]} for g in groups]}

    async def _with_upload(self, request: Request, filename: str, hints: dict):
        """The uploaded checkpoint's embedding (built with ``hints``, see pipeline.graph.hints); 4xx
        on bad input."""
        from pipeline.checkpoint import CheckpointError
        from pipeline.graph.hints import check_hints
        from pipeline.search import EncoderMismatch

        try:
            hints = check_hints(hints, "query parameters")
        except CheckpointError as exc:
            raise HTTPException(422, exc.reason) from None

        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            raise HTTPException(413, f"checkpoint of {declared} bytes is over the {self.max_body}-byte limit")
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, _safe_name(filename))
            size = 0
            with open(path, "wb") as f:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > self.max_body:
                        raise HTTPException(413, f"checkpoint is over the {self.max_body}-byte limit")
                    f.write(chunk)
            if size == 0:
                raise HTTPException(400, "empty request body: send the checkpoint's bytes")
            try:
                return self.search.embed_file(path, hints, sidecar=False)
            except CheckpointError as exc:
                raise HTTPException(422, f"{_safe_name(filename)}: {exc.kind}: {exc.reason}") from None
            except EncoderMismatch as exc:
                raise HTTPException(409, str(exc)) from None
            except ValueError as exc:  # e.g. no encoder state configured
                raise HTTPException(422, str(exc)) from None


def build_app(args: dict) -> serve.Application:
    """``serve run serve.app:build_app index=... graphs=... [catalog=...] [encoder_state=...]``."""
    return ZooAPI.bind(args["index"], args["graphs"], args.get("catalog"), args.get("encoder_state"),
                       float(args.get("max_body_mib", 256.0)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", required=True, help="weightzoo index's output folder")
    parser.add_argument("--graphs", help="ingestion output folder (default: <index>/graphs)")
    parser.add_argument("--catalog", help="zoo catalog.parquet (task labels)")
    parser.add_argument("--encoder-state", default=DEFAULT_ENCODER, help="the index's encoder (default: the shipped one)")
    parser.add_argument("--host", default="127.0.0.1"), parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    from pipeline.ray_utils import ensure_ray

    ensure_ray()
    serve.start(http_options={"host": args.host, "port": args.port})
    serve.run(build_app({"index": os.path.abspath(args.index),
                         "graphs": os.path.abspath(args.graphs or os.path.join(args.index, "graphs")),
                         "catalog": args.catalog and os.path.abspath(args.catalog),
                         "encoder_state": args.encoder_state and os.path.abspath(args.encoder_state)}),
              blocking=True)


if __name__ == "__main__":
    main()
