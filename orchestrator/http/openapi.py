"""The OpenAPI 3.1 document of the HTTP ingress, generated from the plans the store holds.

Every plan gets its own ``POST /v1/plans/<name>:execute`` (and the versioned form) with the
request and response schemas of its typed contract's messages (plan_json.py, components named
by full proto name); the document is rebuilt when the store changes
(`OpenApiCache`), so ``GET /openapi.json`` follows ApplyPlan / DeletePlan live.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from meshserve import __version__
from meshserve.errors import MeshError
from meshserve.http_errors import HTTP_STATUS
from meshserve.orchestrator.http import plan_json
from meshserve.orchestrator.http.proto_schema import message_schema
from meshserve.v1 import orchestrator_pb2, plan_pb2

__all__ = ["EXECUTE_PATH", "VERSIONED_EXECUTE_PATH", "OpenApiCache", "openapi_document"]

EXECUTE_PATH = "/v1/plans/{plan}:execute"
VERSIONED_EXECUTE_PATH = "/v1/plans/{plan}/versions/{version}:execute"
_ERROR_STATUSES = sorted({s for s in HTTP_STATUS.values() if s >= 400} | {408, 413, 415})

_REF = "#/components/schemas/"
_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "status", "message"],
            "properties": {
                "code": {"type": "integer", "description": "the HTTP status"},
                "status": {"type": "string", "description": "the gRPC status name"},
                "message": {"type": "string"},
                "field": {"type": "string", "description": "the request field at fault"},
                "expected": {"type": "string", "description": "what that field must hold"},
            },
        }
    },
}


def _no_text(field: Any) -> str:
    return ""


def _json(schema_ref: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}},
    }


def _errors() -> dict[str, Any]:
    return {
        str(status): _json("Error", "failure (gRPC status mapped)") for status in _ERROR_STATUSES
    }


def _example(plan: plan_pb2.Plan) -> dict[str, Any]:
    """A request body of one row of zeros for every fixed-shape input."""
    example: dict[str, Any] = {}
    for tf in plan_json.contract_for(plan).inputs:
        if not tf.nested and tf.spec.shape is not None:
            example[tf.field] = [0.0 if tf.spec.scalar.name in ("float", "double") else 0] * (
                tf.spec.row_size
            )
    return example


def _execute(plan: plan_pb2.Plan, versioned: bool, refs: tuple[str, str]) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": f"execute_{plan.name}" + ("_version" if versioned else ""),
        "summary": f"Run plan {plan.name}" + (" at a version" if versioned else ""),
        "description": plan.description or f"plan {plan.name}",
        "tags": ["plans"],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": _REF + refs[0]}, "example": _example(plan)}
            },
        },
        "responses": {"200": _json(refs[1], "the plan's outputs"), **_errors()},
    }
    if versioned:
        operation["parameters"] = [
            {
                "name": "version",
                "in": "path",
                "required": True,
                "schema": {"type": "integer", "minimum": 1},
            }
        ]
    return {"post": operation}


def openapi_document(plans: Iterable[plan_pb2.Plan], *, auth: bool) -> dict[str, Any]:
    """The whole document for `plans` (their active versions)."""
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {"Error": _ERROR_SCHEMA}
    feedback = message_schema(orchestrator_pb2.FeedbackRequest.DESCRIPTOR, schemas, _no_text)
    feedback_reply = message_schema(orchestrator_pb2.FeedbackResponse.DESCRIPTOR, schemas, _no_text)
    untyped: list[str] = []
    for plan in sorted(plans, key=lambda p: p.name):
        try:
            refs = plan_json.schemas(plan, schemas)
        except MeshError:  # no typed contract: listed, not described (its calls say why)
            untyped.append(plan.name)
            continue
        paths[EXECUTE_PATH.replace("{plan}", plan.name)] = _execute(plan, False, refs)
        paths[VERSIONED_EXECUTE_PATH.replace("{plan}", plan.name)] = _execute(plan, True, refs)
    paths["/v1/feedback"] = {
        "post": {
            "operationId": "feedback",
            "summary": "Rate an earlier execution (reward or label)",
            "tags": ["feedback"],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": _REF + feedback}}},
            },
            "responses": {"200": _json(feedback_reply, "accepted"), **_errors()},
        }
    }
    for path, what in (("/healthz", "the process is up"), ("/readyz", "ready to serve plans")):
        paths[path] = {
            "get": {
                "operationId": path.strip("/"),
                "summary": what,
                "tags": ["health"],
                "security": [],
                "responses": {"200": {"description": what}, "503": {"description": "not ready"}},
            }
        }
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "meshserve orchestrator",
            "version": __version__,
            "description": "Plans over HTTP/JSON. Errors carry the gRPC status mapped to HTTP "
            "(meshserve.http_errors); Retry-After on 429/503.",
        },
        "paths": paths,
        "components": {"schemas": schemas},
    }
    if untyped:
        document["x-meshserve-untyped-plans"] = untyped
    if auth:
        document["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "a data-plane token"}
        }
        document["security"] = [{"bearer": []}]
    return document


class OpenApiCache:
    """The document as JSON bytes, rebuilt on the first request after the plans changed."""

    def __init__(self, plans: Callable[[], list[plan_pb2.Plan]], *, auth: bool) -> None:
        self._plans = plans
        self._auth = auth
        self._body: bytes | None = None

    def changed(self) -> None:
        """Store change callback: forget the document."""
        self._body = None

    def document(self) -> dict[str, Any]:
        return openapi_document(self._plans(), auth=self._auth)

    def body(self) -> bytes:
        if self._body is None:
            self._body = json.dumps(self.document(), indent=1).encode()
        return self._body
