"""`streamrec api`: serve the API with uvicorn."""

from __future__ import annotations

import argparse
import os
import sys

from streamrec.settings import Settings

__all__ = ["register", "serve"]


def serve(host: str, port: int, *, workers: int = 1, log_level: str = "info", access_log: bool = False) -> None:
    """Serve the API under uvicorn: what ``streamrec api`` runs, and what the benchmark and tests start."""
    # One BLAS thread per worker: the matrix-vector product is memory-bound and workers are the parallelism.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    import uvicorn

    uvicorn.run("online_api.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                log_level=log_level, access_log=access_log, loop="uvloop",
                http="online_api.http:CoalescingHttpToolsProtocol",  # httptools, one write per response
                timeout_graceful_shutdown=10)


def cmd_api(args: argparse.Namespace, settings: Settings) -> int:
    from models.learned_ranker import RankerFileError
    from online_api.hybrid_service import load_ranker
    from online_api.security import WeakApiKey, check_key_strength

    try:
        check_key_strength(settings)
        load_ranker(settings.rank_model_file)  # fail here, with the reason, not in every uvicorn worker
    except (WeakApiKey, RankerFileError) as exc:
        print(f"streamrec: api: {exc}", file=sys.stderr, flush=True)
        return 2
    host = args.host or settings.api_host
    port = args.port or settings.api_port
    if args.log_level in ("info", "debug"):
        shown = f"[{host}]" if ":" in host else host
        print(f"streamrec API on http://{shown}:{port}  (OpenAPI docs: http://{shown}:{port}/docs, "
              f"schema: http://{shown}:{port}/openapi.json)", file=sys.stderr, flush=True)
    serve(host, port, workers=args.workers, log_level=args.log_level, access_log=args.access_log)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this stage's subcommands to the CLI."""
    p = sub.add_parser("api", help="serve the recommendation API and event collector (uvicorn)",
                       description="FastAPI under uvicorn: /v1 recommendations, similar, explain, trending, "
                       "the event collector and catalogue writes; /healthz, /readyz, /metrics. Binds "
                       "STREAMREC_API_HOST (127.0.0.1) by default. See docs/api.md.")
    p.add_argument("--host", help="address to bind (default STREAMREC_API_HOST, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default STREAMREC_API_PORT, 8000)")
    p.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (default 1)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.add_argument("--access-log", action="store_true", help="log every request (off: metrics count them)")
    p.set_defaults(func=cmd_api)

