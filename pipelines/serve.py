"""`armor serve`: the registry's champion behind an HTTP endpoint, on Ray Serve.

Each replica loads the model once (``models:/armor-item-embeddings@champion`` by default: its
item vectors in a FAISS index, and the titles) and answers JSON (``armor/tracking/service.py``
has the request and the answer):

    POST /recommend  {"history": [1, 2, 3], "k": 10}  -> top-k with titles, scores, model version
    POST /recommend  {"user_id": 42, "k": 10}          -> the same for a user of the model's split
    GET  /healthz                                      -> the model name and the version in service

Requests that arrive together are answered in one FAISS search (``@serve.batch``). Every replica
checks the alias every ``--follow-seconds`` and swaps in the version it names when `armor
register` moves it: a request in flight finishes on the version it started with, and every answer
names its version. Bound to 127.0.0.1 unless ``--host`` says otherwise.

Locally: ``armor serve --workspace runs/demo`` (stops on Ctrl-C, or after ``--duration``). On a
cluster: ``serve run pipelines.serve:app_builder model_uri=models:/armor-item-embeddings@champion
tracking_uri=http://HEAD:5000``, or ``serve deploy serve_config.yaml`` (next to cluster.yaml), or
``ray job submit -- python -m pipelines.serve --tracking-uri ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from pipelines.cli import add_common, stage_main

log = logging.getLogger("armor.serve")

DEFAULT_MODEL = "models:/armor-item-embeddings@champion"
APP_NAME = "armor"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"registered model URI (default {DEFAULT_MODEL})")
    parser.add_argument("--workspace", type=Path, default=None, help="to find the default sqlite tracking store")
    parser.add_argument("--tracking-uri", default=None, help="default $MLFLOW_TRACKING_URI, else --workspace's sqlite")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    parser.add_argument("--replicas", type=int, default=1, help="replicas (default 1; ignored with --max-replicas)")
    parser.add_argument("--max-replicas", type=int, default=None,
                        help="autoscale between 1 and this many replicas (default: a fixed --replicas)")
    parser.add_argument("--max-batch-size", type=int, default=32, help="requests answered together (default 32)")
    parser.add_argument("--follow-seconds", type=float, default=5.0,
                        help="how often a replica checks whether the alias moved (default 5)")
    parser.add_argument("--max-k", type=int, default=100, help="largest k a request may ask for (default 100)")
    parser.add_argument("--duration", type=float, default=None,
                        help="stop after this many seconds (default: serve until Ctrl-C)")
    add_common(parser)


def service_class(max_batch_size: int = 32, batch_wait_s: float = 0.002) -> type:
    """The Ray Serve deployment class (Ray is imported only here)."""
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    from armor.tracking.service import BadRequest, RecommenderService, parse_request

    class ArmorRecommender:
        def __init__(self, model_uri: str, tracking_uri: str | None, follow_seconds: float, max_k: int) -> None:
            self.service = RecommenderService(model_uri, tracking_uri, max_k=max_k)
            self.follow_seconds = follow_seconds
            self._follower: asyncio.Task | None = None

        async def _follow(self) -> None:
            while True:
                await asyncio.sleep(self.follow_seconds)
                try:
                    await asyncio.to_thread(self.service.follow)
                except Exception as exc:  # noqa: BLE001 - keep serving the loaded version
                    log.warning("serve: could not check %s@%s: %s", self.service.name, self.service.alias, exc)

        @serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=batch_wait_s)
        async def answer(self, queries: list[Any]) -> list[dict[str, Any]]:
            return self.service.answer_many(queries)

        async def __call__(self, request: Request) -> JSONResponse:
            if self._follower is None and self.follow_seconds > 0:
                self._follower = asyncio.get_running_loop().create_task(self._follow())
            path = request.url.path.rstrip("/") or "/"
            if path.endswith("/healthz") and request.method == "GET":
                return JSONResponse(self.service.health())
            if not path.endswith("/recommend"):
                return JSONResponse({"error": f"no route {request.method} {path}; use POST /recommend or "
                                              "GET /healthz"}, status_code=404)
            if request.method != "POST":
                return JSONResponse({"error": "use POST /recommend with a JSON body"}, status_code=405)
            try:
                query = parse_request(await request.body(), self.service.max_k, self.service.max_body)
            except BadRequest as exc:
                return JSONResponse({"error": str(exc)}, status_code=exc.status)
            answer = await self.answer(query)
            return JSONResponse(answer, status_code=answer.pop("status"))

    return ArmorRecommender


def build_app(model_uri: str, tracking_uri: str | None, replicas: int = 1, max_replicas: int | None = None,
              max_batch_size: int = 32, follow_seconds: float = 5.0, max_k: int = 100) -> Any:
    """The Serve application: one deployment of ``service_class``."""
    from ray import serve

    scaling: dict[str, Any] = ({"autoscaling_config": {"min_replicas": 1, "max_replicas": max_replicas,
                                                       "target_ongoing_requests": 8}}
                               if max_replicas else {"num_replicas": replicas})
    deployment = serve.deployment(service_class(max_batch_size), name="ArmorRecommender",
                                  ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=64, **scaling)
    return deployment.bind(model_uri, tracking_uri, follow_seconds, max_k)


def app_builder(args: dict[str, str]) -> Any:
    """For `serve run pipelines.serve:app_builder model_uri=... tracking_uri=...` and Serve config files."""
    return build_app(args.get("model_uri", DEFAULT_MODEL), args.get("tracking_uri"),
                     int(args.get("replicas", 1)), int(args["max_replicas"]) if args.get("max_replicas") else None,
                     int(args.get("max_batch_size", 32)), float(args.get("follow_seconds", 5.0)),
                     int(args.get("max_k", 100)))


def start(model_uri: str, tracking_uri: str | None, host: str = "127.0.0.1", port: int = 8000, **options: Any) -> str:
    """Start Serve's HTTP proxy on ``host:port`` and deploy the app on the current Ray runtime; returns
    the base URL. The caller owns the Ray runtime (and ``serve.shutdown()``)."""
    from ray import serve

    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(model_uri, tracking_uri, **options), name=APP_NAME, route_prefix="/")
    return f"http://{host}:{port}"


def run(args: argparse.Namespace) -> int:
    import os

    from armor.errors import ConfigError
    from armor.tracking.runs import tracking_uri
    from pipelines.ray_utils import ray_session

    if args.tracking_uri is None and args.workspace is None and not os.environ.get("MLFLOW_TRACKING_URI"):
        raise ConfigError("--tracking-uri or --workspace (or MLFLOW_TRACKING_URI) is needed to find the registry")
    if args.workspace is not None and not (args.workspace / "mlflow.db").is_file() and args.tracking_uri is None:
        raise ConfigError(f"--workspace {args.workspace}: no MLflow store there (run `armor demo` or `armor register`)")
    for flag, value, low in (("--replicas", args.replicas, 1), ("--max-k", args.max_k, 1),
                             ("--max-batch-size", args.max_batch_size, 1), ("--port", args.port, 1)):
        if value < low:
            raise ConfigError(f"{flag}: must be >= {low}, got {value}")
    uri = tracking_uri(args.workspace or ".", args.tracking_uri)
    from ray import serve

    with ray_session():
        url = start(args.model, uri, args.host, args.port, replicas=args.replicas, max_replicas=args.max_replicas,
                    max_batch_size=args.max_batch_size, follow_seconds=args.follow_seconds, max_k=args.max_k)
        print(f"serving {args.model} at {url}: POST {url}/recommend, GET {url}/healthz (Ctrl-C stops)", flush=True)
        try:
            deadline = None if args.duration is None else time.monotonic() + args.duration
            while deadline is None or time.monotonic() < deadline:
                time.sleep(0.5)
        finally:
            serve.shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    return stage_main(add_arguments, run, "python -m pipelines.serve", __doc__ or "", argv)


if __name__ == "__main__":
    raise SystemExit(main())
