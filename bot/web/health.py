"""``/healthz``, ``/readyz`` and ``/metrics`` on Oyez's HTTP server, none behind the API token
(they carry no secrets and no request text).

- ``GET /healthz``: 200 ``{"status": "ok"}`` while the process serves HTTP (a liveness probe).
- ``GET /readyz``: 200 when every front end is connected, the default provider is usable and
  the books can be read (a shared engine answers), else 503; the body names each check and
  shows each paid provider's credit circuit.
- ``GET /metrics``: :data:`bot.ops.metrics.REGISTRY` in the Prometheus text format.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bot.frontend import FrontEnd
from bot.ops.logs import mask_secrets
from bot.ops.metrics import REGISTRY
from bot.synthesis.pipeline import SpeechPipeline
from bot.web.server import OyezServer

__all__ = ["add_health_routes", "readiness"]


async def readiness(
    front_ends: Iterable[FrontEnd], pipeline: SpeechPipeline, default: str
) -> tuple[bool, dict[str, Any]]:
    """(ready, report): each front end's state, the ``default`` provider's, the circuits."""
    checks: dict[str, Any] = {}
    ready = True
    for front_end in front_ends:
        ok, detail = front_end.ready()
        checks[front_end.name] = {"ok": ok, "detail": detail}
        ready = ready and ok
    try:
        problem = pipeline.registry.get(default).configuration_problem()
    except Exception as exc:  # an unknown default provider
        problem = str(exc)
    checks["default_provider"] = {"ok": problem is None, "detail": problem or default}
    ready = ready and problem is None
    try:
        checks["circuits"] = await _circuits(pipeline)
    except Exception as exc:  # the books cannot be read: a shared engine that is down
        checks["circuits"] = {"ok": False, "detail": f"the books cannot be read: {exc}"}
        ready = False
    return ready, checks


async def _circuits(pipeline: SpeechPipeline) -> dict[str, Any]:
    """Each usable paid provider's credit circuit, from the books."""
    circuits: dict[str, Any] = {}
    for name in pipeline.registry.names():
        provider = pipeline.registry.get(name)
        if not provider.paid or provider.configuration_problem():
            continue
        circuit = await pipeline.dispatcher.ledger.circuit(name)
        circuits[name] = (
            {"state": "closed"}
            if circuit is None
            else {
                "state": "open",
                "reason": circuit.reason,
                "next_check_at": circuit.next_check_at.isoformat(),
            }
        )
    return circuits


def add_health_routes(
    server: OyezServer, front_ends: Sequence[FrontEnd], pipeline: SpeechPipeline, default: str
) -> None:
    """Add the three endpoints to ``server``; ``front_ends`` is read at each ``/readyz`` (the
    service fills its list after this), ``default`` is the default provider's name."""

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        ready, checks = await readiness(front_ends, pipeline, default)
        body = {"status": "ready" if ready else "not ready", "checks": checks}
        return web.json_response(  # unauthenticated: a provider's quoted key must not show
            text=mask_secrets(json.dumps(body)), status=200 if ready else 503
        )

    async def metrics(_: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(REGISTRY))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    server.add_routes(
        [web.get("/healthz", healthz), web.get("/readyz", readyz), web.get("/metrics", metrics)]
    )
