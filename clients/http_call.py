"""Plans over the orchestrator's HTTP/JSON ingress from the client side: ``meshserve call
--http`` and the ``curl`` line ``meshserve demo`` prints.

The body and reply are the proto3 JSON of the plan's typed contract (orchestrator/http/
plan_json.py): each input a field named after it (tensor names that are proto identifiers, as
in the examples; docs/TYPED.md has the naming rule), rows flattened row-major; the reply's
tensors come back flat too (int64 values as strings are turned back into integers). A failure
is rebuilt as the MeshError class of its gRPC status (``error.status``), like the gRPC SDK does.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from typing import Any

import aiohttp
import grpc
import numpy as np

from meshserve.clients.sdk import ExecuteResult
from meshserve.errors import MeshError, error_for_status

__all__ = ["DATA_TOKEN_ENV", "curl_command", "execute_http"]

DATA_TOKEN_ENV = "MESHSERVE_DATA_TOKEN"  # the client's one data-plane token


def _body(
    inputs: Mapping[str, np.ndarray], routing_key: str, attributes: Mapping[str, str]
) -> dict[str, Any]:
    body: dict[str, Any] = {name: np.asarray(arr).ravel().tolist() for name, arr in inputs.items()}
    if routing_key:
        body["routing_key"] = routing_key
    if attributes:
        body["attributes"] = dict(attributes)
    return body


def _error(status: int, text: str) -> MeshError:
    try:
        error = json.loads(text)["error"]
        code = grpc.StatusCode[error["status"]]
        message = str(error["message"])
    except (ValueError, KeyError, TypeError):
        code, message = grpc.StatusCode.UNKNOWN, f"HTTP {status}: {text[:200]}"
    return error_for_status(code, message)


async def execute_http(
    base_url: str,
    plan: str,
    inputs: Mapping[str, np.ndarray],
    *,
    routing_key: str = "",
    attributes: Mapping[str, str] | None = None,
    data_token: str = "",
    timeout_s: float | None = 30.0,
) -> ExecuteResult:
    """``POST {base_url}/v1/plans/{plan}:execute``; raises the MeshError of a failed call."""
    headers = {"Authorization": f"Bearer {data_token}"} if data_token else {}
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    url = f"{base_url.rstrip('/')}/v1/plans/{plan}:execute"
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.post(url, json=_body(inputs, routing_key, attributes or {}), headers=headers) as r,
    ):
        text = await r.text()
        if r.status != 200:
            raise _error(r.status, text)
    reply = json.loads(text)
    return ExecuteResult(
        request_id=reply.get("request_id", ""),
        plan=plan,
        plan_version=int(reply.get("plan_version", 0)),
        outputs={k: _array(v) for k, v in reply.items() if k not in _FIXED_FIELDS},
        decisions=dict(reply.get("decisions", {})),
        trace_id=reply.get("trace_id", ""),
    )


_FIXED_FIELDS = {"request_id", "status", "decisions", "plan_version", "trace_id"}


def _array(value: Any) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.kind == "U":  # proto3 JSON writes 64-bit integers (and NaN) as strings
        try:
            return array.astype(np.int64)
        except ValueError:
            return array.astype(np.float64)
    return array


def curl_command(
    base_url: str, plan: str, inputs: Mapping[str, np.ndarray], *, token_env: str = ""
) -> str:
    """A shell line that runs `plan` on `inputs` with curl (the token read from $`token_env`
    when given: never written into the line itself)."""
    body = json.dumps(_body(inputs, "", {}), separators=(",", ":"))
    auth = f' -H "Authorization: Bearer ${token_env}"' if token_env else ""
    url = f"{base_url.rstrip('/')}/v1/plans/{plan}:execute"
    return (
        f"curl -s {shlex.quote(url)}{auth} -H 'Content-Type: application/json' "
        f"-d {shlex.quote(body)}"
    )
