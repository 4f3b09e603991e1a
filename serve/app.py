"""Ray Serve app: HTTP queries over an indexed zoo (the output of weightzoo index), models added to
it, and canonicalization, alignment and merging of uploaded checkpoints.

    weightzoo serve --index my-index                      # after weightzoo index: on 127.0.0.1:8000 until Ctrl-C
    WEIGHTZOO_TOKEN=s3cret weightzoo serve --index my-index   # ... and POST /models with that bearer token
    weightzoo serve --index data/index --graphs data/graphs --catalog data/zoo/catalog.parquet \\
        --encoder-state runs/encoders/scale_gmn.pt --autoencoder runs/autoencoders/ae-inr_sine-scale_gmn.pt
    serve run serve.app:build_app index=data/index        # Serve's own runner (a config file: serve deploy)

Deployments, composed through handles and each sized on its own: ``Ingress`` (FastAPI, no CPU work),
``Embedder`` (batched, off the event loop), ``Searcher`` (the index; follows the folder),
``Registrar`` (the one writer), ``Aligner``, and ``Canonicalizer`` when autoencoders are given.

=======  =================================  ==========================================================
GET      /                                  the search page (drop a checkpoint: neighbours,
                                            near-duplicates, its place on the map)
GET      /healthz, /readyz                  liveness; readiness (the index and encoder answer, else 503)
GET      /health                            index size and encoder version
GET      /models/{model}                    an indexed model's metadata (content id, model id or file name)
GET      /models/{model}/neighbors          top-k by model; query: k, task, family, min_params, max_params
POST     /search                            top-k by an uploaded checkpoint; same query parameters
                                            plus ``filename`` (names the upload in errors), the
                                            upload's hints ``activation``, ``model_family``,
                                            ``num_heads`` (see pipeline.graph.hints), and
                                            ``duplicates``, ``position`` (its near-duplicates, its
                                            place on the map)
POST     /models                            add the uploaded checkpoint to the index (bearer token):
                                            201 added, 200 indexed already; query: ``filename``, hints
POST     /embed                             the uploaded checkpoint's embedding; query: the hints
GET      /map                               the zoo on a 2-D map (x, y, task, family per model)
GET      /duplicates                        near-duplicate groups, each pair with its evidence;
                                            query: min_cosine, max_distance, max_wiring_distance,
                                            max_output_distance
GET      /models/{model}/duplicates         the model's near-duplicate group
GET      /models/{model}/lineage            its parents, children, ancestors and descendants, typed
                                            (``lineage``: a weightzoo lineage output folder)
POST     /canonicalize                      the upload's canonical network (safetensors download)
POST     /align                             multipart files ``a``, ``b``: B aligned to A, or with
                                            ``alpha`` the merged model (safetensors download)
GET      /docs                              the OpenAPI page
=======  =================================  ==========================================================

Bad input gets a 4xx with the reason: 400 (empty body), 401 (no bearer token where one is needed),
403 (a wrong one, or writes to a server started without one), 404 (unknown model), 409 (encoder
version mismatch), 413 (body over ``max_body_mib``), 422 (not a checkpoint, corrupt, unsafe or
unsupported, invalid parameters, a task or family filter no indexed model has: the reply lists those
it has; architectures that do not match). Uploads are parsed by our own validating readers (never
unpickled).
"""
from __future__ import annotations

import argparse
import os

from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from pipeline.encoders.state import DEFAULT_ENCODER
from serve.aligner import Aligner
from serve.canonicalizer import Canonicalizer
from serve.embedder import Embedder
from serve.auth import TOKEN_ENV
from serve.ingress import Ingress
from serve.registrar import Registrar
from serve.searcher import Searcher


class AppArgs(BaseModel):
    """The app builder's arguments (``serve run serve.app:build_app key=value ...`` or a Serve
    config file's ``args``; an unknown key is refused). Paths or URIs."""
    model_config = ConfigDict(extra="forbid")
    index: str = Field(description="weightzoo index's output folder")
    graphs: str | None = Field(None, description="its ingestion folder (default: <index>/graphs)")
    catalog: str | None = Field(None, description="the zoo's catalog.parquet (task labels)")
    encoder_state: str = Field(DEFAULT_ENCODER, description="the index's encoder (default: the shipped one)")
    autoencoders: list[str] = Field(default_factory=list, description="autoencoders for /canonicalize")
    max_body_mib: float = Field(256.0, gt=0, description="the largest checkpoint accepted")
    token_env: str = Field(TOKEN_ENV, description="the environment variable holding the bearer token for writes")
    token_file: str | None = Field(None, description="a file holding the token instead (a mounted secret)")
    protect_reads: bool = Field(False, description="reads need the token too (all but /healthz, /readyz, /, /docs)")
    lineage: str | None = Field(None, description="a weightzoo lineage output folder, for /models/{model}/lineage")


def build_app(args: AppArgs | dict) -> serve.Application:
    """The composed app (Serve validates ``args`` against :class:`AppArgs`)."""
    config = args if isinstance(args, AppArgs) else AppArgs.model_validate(args)
    graphs = config.graphs or os.path.join(config.index, "graphs")
    canonicalizer = Canonicalizer.bind(config.autoencoders) if config.autoencoders else None
    return Ingress.bind(Embedder.bind(config.encoder_state), Searcher.bind(config.index, graphs, config.catalog, config.lineage),
                        Aligner.bind(), Registrar.bind(config.index, graphs, config.encoder_state), canonicalizer,
                        config.max_body_mib, config.token_env, config.token_file, config.protect_reads)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", required=True, help="weightzoo index's output folder")
    parser.add_argument("--graphs", help="ingestion output folder (default: <index>/graphs)")
    parser.add_argument("--catalog", help="zoo catalog.parquet (task labels)")
    parser.add_argument("--encoder-state", default=DEFAULT_ENCODER, help="the index's encoder (default: the shipped one)")
    parser.add_argument("--autoencoder", action="append", default=[], help="an autoencoder for /canonicalize (repeat)")
    parser.add_argument("--max-body-mib", type=float, default=256.0)
    parser.add_argument("--token-file", help=f"the bearer token for writes (default: ${TOKEN_ENV})")
    parser.add_argument("--protect-reads", action="store_true", help="reads need the token too")
    parser.add_argument("--lineage", help="a weightzoo lineage output folder (GET /models/{model}/lineage)")
    parser.add_argument("--host", default="127.0.0.1"), parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    from pipeline.ray_utils import ensure_ray

    absolute = lambda p: p and (p if "://" in p else os.path.abspath(p))  # noqa: E731 -- replicas run elsewhere
    ensure_ray()
    serve.start(http_options={"host": args.host, "port": args.port})
    serve.run(build_app(AppArgs(index=absolute(args.index), graphs=absolute(args.graphs), catalog=absolute(args.catalog),
                                encoder_state=absolute(args.encoder_state),
                                autoencoders=[absolute(a) for a in args.autoencoder], max_body_mib=args.max_body_mib,
                                token_file=absolute(args.token_file), protect_reads=args.protect_reads,
                                lineage=absolute(args.lineage))),
              blocking=True)


if __name__ == "__main__":
    main()
