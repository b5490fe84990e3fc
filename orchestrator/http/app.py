"""The orchestrator's HTTP/JSON ingress: plans, feedback, health, OpenAPI and its docs page.

Routes: ``POST /v1/plans/{plan}:execute`` and ``POST /v1/plans/{plan}/versions/{version}:execute``
(bodies: plan_json.py), ``POST /v1/feedback`` (the proto3 JSON form of ``FeedbackRequest``),
``GET /healthz``, ``GET /readyz``, ``GET /openapi.json``, ``GET /docs``. The engine, the learning
hub and the data-plane token checks (orchestrator/auth.py) are the very ones gRPC uses; errors
are the JSON errors of meshserve.http_errors (the gRPC status mapped once).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web
from google.protobuf import json_format

from meshserve.errors import InvalidInputError, UnavailableError
from meshserve.http_errors import FieldError
from meshserve.limits import Limits
from meshserve.orchestrator.auth import DataPlaneAuth
from meshserve.orchestrator.engine import Engine
from meshserve.orchestrator.http import plan_json
from meshserve.orchestrator.http.docs import docs_page
from meshserve.orchestrator.http.openapi import EXECUTE_PATH, VERSIONED_EXECUTE_PATH, OpenApiCache
from meshserve.orchestrator.learning_port import Learning
from meshserve.orchestrator.servicers import give_feedback
from meshserve.orchestrator.store import PlanStore
from meshserve.v1 import orchestrator_pb2
from meshserve.web import REQUEST_ID, REQUEST_ID_HEADER, HttpConfig, base_app, json_response
from meshserve.web import read_json as read_json_body

__all__ = ["Ingress", "ingress_app"]

_PLAN = "{plan:[A-Za-z0-9][A-Za-z0-9_.-]{0,127}}"


@dataclass(frozen=True)
class Ingress:
    """What the ingress serves from (the orchestrator's own parts)."""

    engine: Engine
    store: PlanStore
    learning: Learning
    limits: Limits
    auth: DataPlaneAuth | None
    ready: Callable[[], bool]


def ingress_app(ingress: Ingress, config: HttpConfig) -> tuple[web.Application, OpenApiCache]:
    """The application, and the OpenAPI cache to forget on every plan store change."""
    app = base_app(config)
    store, auth = ingress.store, ingress.auth
    openapi = OpenApiCache(lambda: [i.active_plan() for i in store.infos()], auth=auth is not None)

    def authorize(request: web.Request, plan: str | None) -> None:
        if auth is None:
            return
        principal = auth.authenticate(request.headers.getall("Authorization", ()), "http")
        if plan is not None:
            auth.authorize(principal, plan, "http")

    async def execute(request: web.Request) -> web.Response:
        name = request.match_info["plan"]
        authorize(request, name)
        version = int(request.match_info.get("version", "0"))
        body = await read_json_body(request, config)
        plan = store.get(name, version)
        call = plan_json.request_from_json(
            plan, body, request_id=request[REQUEST_ID], limits=ingress.limits
        )
        result = await ingress.engine.execute(call)
        headers = {REQUEST_ID_HEADER: result.request_id}
        if result.trace_id:
            headers["X-Trace-Id"] = result.trace_id
        return json_response(plan_json.response_to_json(plan, result), headers=headers)

    async def feedback(request: web.Request) -> web.Response:
        authorize(request, None)
        body = await read_json_body(request, config)
        message = orchestrator_pb2.FeedbackRequest()
        if not isinstance(body, dict):
            raise FieldError("body", f"got {type(body).__name__}", "a JSON object")
        try:
            json_format.ParseDict(body, message, max_recursion_depth=config.max_json_depth)
        except json_format.ParseError as exc:
            raise InvalidInputError(f"feedback body: {str(exc)[:300]}") from None
        reply = await give_feedback(ingress.learning, message, ingress.limits)
        return json_response(json_format.MessageToDict(reply, preserving_proto_field_name=True))

    async def healthz(request: web.Request) -> web.Response:
        return json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        if not ingress.ready():
            raise UnavailableError("the orchestrator is not ready (starting or draining)")
        return json_response({"status": "ready", "plans": store.names()})

    async def openapi_json(request: web.Request) -> web.Response:
        return web.Response(body=openapi.body(), content_type="application/json")

    async def docs(request: web.Request) -> web.Response:
        base = f"{request.scheme}://{request.host}"
        return web.Response(text=docs_page(openapi.document(), base), content_type="text/html")

    router = app.router
    router.add_post(EXECUTE_PATH.replace("{plan}", _PLAN), execute)
    versioned = VERSIONED_EXECUTE_PATH.replace("{plan}", _PLAN)
    router.add_post(versioned.replace("{version}", "{version:[0-9]{1,9}}"), execute)
    router.add_post("/v1/feedback", feedback)
    router.add_get("/healthz", healthz)
    router.add_get("/readyz", readyz)
    router.add_get("/openapi.json", openapi_json)
    router.add_get("/docs", docs)
    return app, openapi
