#!/usr/bin/env python
"""A bare FastAPI app doing what `GET /api/v1/health` does, and nothing else: the yardstick of
`liveness_wrk.py`.

No middleware, no settings, no database: one route answering the same pre-encoded
`{"status": "pass"}` with the same media type and `Cache-Control` as codepulse's liveness
endpoint, and a `/ready` route for the benchmark's readiness poll. Served by uvicorn with the
options `codepulse serve` passes (one worker, no access log, no server header, proxy headers),
so the ratio of the two is what codepulse's own stack costs per request.

    uv run python tests/benchmarks/bare_app.py --port 8001
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Response

LIVE_BODY = b'{"status":"pass"}'
HEALTH_CONTENT_TYPE = "application/health+json"
NO_STORE = {"Cache-Control": "no-store"}


def create_app() -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/api/v1/health")
    async def liveness() -> Response:
        return Response(LIVE_BODY, media_type=HEALTH_CONTENT_TYPE, headers=NO_STORE)

    @app.get("/api/v1/health/ready")
    async def readiness() -> Response:
        return Response(LIVE_BODY, media_type=HEALTH_CONTENT_TYPE, headers=NO_STORE)

    return app


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args(argv)
    # The options of `codepulse serve` (src/codepulse/cli.py) with their default settings.
    uvicorn.run(
        "bare_app:create_app",
        factory=True,
        app_dir=str(Path(__file__).parent),
        host=args.host,
        port=args.port,
        workers=1,
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=True,
        forwarded_allow_ips="127.0.0.1",
        timeout_graceful_shutdown=30,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
