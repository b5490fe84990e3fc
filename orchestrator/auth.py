"""Authentication of the orchestrator's callers, gRPC and HTTP: the one place it is decided.

Two kinds of bearer token, never the same string:

- the **admin token** (``--admin-token-file`` / $MESHSERVE_ADMIN_TOKEN): every method under
  ``/meshserve.v1.Admin/``; with none configured every Admin call fails;
- **data-plane tokens** (`DataPlaneAuth`, ``--data-tokens-file`` / $MESHSERVE_DATA_TOKENS): when
  configured, every other method but health and reflection (Execute, ExecuteStream, Feedback,
  typed plan services) and every HTTP data-plane endpoint needs one. Off when none is
  configured (local development); ``deploy/`` turns it on.

The token file has one token per line, optionally followed by the plans it may run::

    # token                          plans (comma separated; "*" or nothing: every plan)
    3b6f0c1e-reporting-team          digits-pipeline,digits-ensemble
    9e2a77d4-batch-jobs              *

A missing or unknown token is UNAUTHENTICATED (HTTP 401), a known token naming a plan outside
its scope PERMISSION_DENIED (HTTP 403); Feedback needs a valid token (its request id is known
only to whoever ran the request). Every refusal is counted in
``meshserve_auth_refused_total{surface, service, code}``; tokens never appear in logs, metrics or
messages (a principal is named by its line number in the file).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc

from meshserve.decoding import Undecodable
from meshserve.errors import MeshError, PermissionDeniedError, UnauthenticatedError
from meshserve.names import quote
from meshserve.orchestrator.metrics import AUTH_REFUSED

__all__ = [
    "ADMIN_PREFIX",
    "DATA_TOKENS_ENV",
    "PUBLIC_PREFIXES",
    "BearerTokenInterceptor",
    "DataPlaneAuth",
    "Principal",
]

ADMIN_PREFIX = "/meshserve.v1.Admin/"
# Methods anyone who can reach the port may call (load balancers, probes, grpcurl describe).
PUBLIC_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
DATA_TOKENS_ENV = "MESHSERVE_DATA_TOKENS"
ALL_PLANS = "*"
_MIN_TOKEN_CHARS = 16
_BEARER = "Bearer "


def _one_bearer(values: Iterable[str | bytes], what: str) -> str:
    """The token of exactly one ``authorization: Bearer <token>`` value."""
    texts = [v if isinstance(v, str) else bytes(v).decode("latin-1") for v in values]
    if not texts:
        raise UnauthenticatedError(f"missing 'authorization: Bearer <token>' ({what} token)")
    if len(texts) > 1:
        raise UnauthenticatedError(
            f"{len(texts)} 'authorization' headers: send exactly one ('Bearer <token>')"
        )
    if not texts[0].startswith(_BEARER):
        raise UnauthenticatedError("the 'authorization' value must be 'Bearer <token>'")
    return texts[0][len(_BEARER) :].strip()


def _refused(surface: str, service: str, exc: MeshError) -> MeshError:
    AUTH_REFUSED.labels(surface, service, exc.code.name).inc()
    return exc


@dataclass(frozen=True)
class Principal:
    """Who a data-plane token is: its line in the token file and the plans it may run."""

    label: str
    plans: frozenset[str] | None  # None: every plan

    def may_run(self, plan: str) -> bool:
        return self.plans is None or plan in self.plans


class DataPlaneAuth:
    """Data-plane tokens and their plan scopes; the checks both gRPC and HTTP call."""

    def __init__(self, scopes: Mapping[str, frozenset[str] | None], admin_token: str = "") -> None:
        """`scopes`: token -> the plans it may run (None: all). Raises ValueError for a short
        token or one equal to the admin token (admin and data-plane tokens are distinct)."""
        if not scopes:
            raise ValueError("no data-plane tokens given")
        self._by_digest: dict[bytes, Principal] = {}
        for number, (token, plans) in enumerate(scopes.items(), start=1):
            if len(token) < _MIN_TOKEN_CHARS:
                raise ValueError(f"data-plane token #{number} is shorter than {_MIN_TOKEN_CHARS}")
            if admin_token and hmac.compare_digest(token, admin_token):
                raise ValueError(f"data-plane token #{number} is the admin token: use another")
            self._by_digest[_digest(token)] = Principal(f"token#{number}", plans)

    @classmethod
    def parse(cls, text: str, admin_token: str = "") -> DataPlaneAuth:
        """From the token file format (module docstring); ValueError names the bad line."""
        scopes: dict[str, frozenset[str] | None] = {}
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            token, _, rest = line.partition(" ")
            plans = frozenset(p.strip() for p in rest.split(",") if p.strip())
            if token in scopes:
                raise ValueError(f"data-plane tokens line {number}: the same token twice")
            scopes[token] = None if not plans or ALL_PLANS in plans else plans
        return cls(scopes, admin_token)

    def authenticate(self, values: Iterable[str | bytes], surface: str) -> Principal:
        """The principal of the ``authorization`` values, or UnauthenticatedError (counted)."""
        try:
            token = _one_bearer(values, "data-plane")
        except UnauthenticatedError as exc:
            raise _refused(surface, "data", exc) from None
        principal = self._by_digest.get(_digest(token))
        if principal is None:
            raise _refused(surface, "data", UnauthenticatedError("unknown data-plane token"))
        return principal

    def authorize(self, principal: Principal, plan: str, surface: str) -> None:
        """PermissionDeniedError (counted) unless `principal` may run `plan`."""
        if not principal.may_run(plan):
            raise _refused(
                surface,
                "data",
                PermissionDeniedError(
                    f"{principal.label} may not run plan {quote(plan)} "
                    f"(its plans: {', '.join(sorted(principal.plans or ()))})"
                ),
            )


def _digest(token: str) -> bytes:
    """Tokens are looked up by digest: equal-length keys, and no token kept in a dict."""
    return hashlib.sha256(token.encode()).digest()


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Admin token on Admin methods; data-plane tokens (when configured) on every method that is
    neither Admin nor public, with the plan of each ExecuteRequest checked against the scope."""

    def __init__(
        self,
        token: str,
        prefix: str = ADMIN_PREFIX,
        data_plane: DataPlaneAuth | None = None,
        plan_of_method: Callable[[str], str | None] | None = None,
    ) -> None:
        """`plan_of_method`: the plan a method path serves (typed plan services,
        ``/meshserve.plans.<plan>.v<n>.<Service>/Execute``), None for other methods."""
        self._expected = f"Bearer {token}".encode() if token else b""
        self._prefix = prefix
        self._data = data_plane
        self._plan_of_method = plan_of_method

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = handler_call_details.method or ""
        metadata = handler_call_details.invocation_metadata or ()
        if method.startswith(self._prefix):
            problem = self._admin_problem(metadata)
            if problem is None:
                return await continuation(handler_call_details)
            _refused("grpc", "admin", UnauthenticatedError(problem))
            return _deny(await continuation(handler_call_details), problem)  # UNAUTHENTICATED
        data = self._data
        if data is None or method.startswith(PUBLIC_PREFIXES):
            return await continuation(handler_call_details)
        try:
            principal = data.authenticate((v for k, v in metadata if k == "authorization"), "grpc")
        except UnauthenticatedError as exc:
            return _deny(await continuation(handler_call_details), exc.message)
        handler = await continuation(handler_call_details)
        if handler is None or principal.plans is None:
            return handler
        served = self._plan_of_method(method) if self._plan_of_method is not None else None
        if served is not None:
            try:
                data.authorize(principal, served, "grpc")
            except PermissionDeniedError as exc:
                return _deny(handler, exc.message, grpc.StatusCode.PERMISSION_DENIED)
            return handler
        return _scoped(handler, data, principal)

    def _admin_problem(self, metadata: Any) -> str | None:
        if not self._expected:
            return "admin calls are disabled: the orchestrator has no admin token configured"
        values = [v for k, v in metadata if k == "authorization"]
        if not values:
            return "missing 'authorization: Bearer <token>' metadata"
        if len(values) > 1:
            return f"{len(values)} 'authorization' headers: send exactly one ('Bearer <token>')"
        value = values[0]
        given = value.encode() if isinstance(value, str) else bytes(value)
        if not hmac.compare_digest(given, self._expected):
            return "wrong admin token (expected 'authorization: Bearer <token>')"
        return None


def _plan_of(request: Any) -> str | None:
    """The plan a request names (ExecuteRequest.plan); None for requests without one."""
    if isinstance(request, Undecodable):
        return None  # answered INVALID_ARGUMENT by the servicer
    plan = getattr(request, "plan", None)
    return plan if isinstance(plan, str) else None


def _scoped(
    handler: grpc.RpcMethodHandler[Any, Any], data: DataPlaneAuth, principal: Principal
) -> grpc.RpcMethodHandler[Any, Any]:
    """`handler` with each request's plan checked against `principal`'s scope first."""
    fields: Any = handler  # grpc's _RpcMethodHandler namedtuple at runtime

    def check(request: Any) -> None:
        plan = _plan_of(request)
        if plan:  # "" (a GetContract for a model, an Execute without a plan): nothing to scope
            data.authorize(principal, plan, "grpc")

    if not handler.request_streaming and not handler.response_streaming:
        behavior = fields.unary_unary

        async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                check(request)
            except PermissionDeniedError as exc:
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, exc.message)
            return await behavior(request, context)

        return fields._replace(unary_unary=unary)  # type: ignore[no-any-return]
    if handler.request_streaming and handler.response_streaming:
        stream = fields.stream_stream

        async def checked(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
            async for request in requests:
                check(request)  # ends the stream with PERMISSION_DENIED (map_stream_errors)
                yield request

        async def bidi(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
            # an async generator function: grpc.aio serves only those as response streams
            async for response in stream(checked(requests), context):
                yield response

        return fields._replace(stream_stream=bidi)  # type: ignore[no-any-return]
    return handler


def _deny(
    handler: grpc.RpcMethodHandler[Any, Any] | None,
    message: str,
    code: grpc.StatusCode = grpc.StatusCode.UNAUTHENTICATED,
) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler of the same shape as `handler` that answers `code` at once."""

    async def abort(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(code, message)

    async def abort_streaming(request: Any, context: Any) -> AsyncIterator[Any]:
        await context.abort(code, message)
        yield  # pragma: no cover (abort raises)

    if handler is None or not handler.response_streaming:
        if handler is not None and handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(abort)
        return grpc.unary_unary_rpc_method_handler(abort)
    if handler.request_streaming:
        return grpc.stream_stream_rpc_method_handler(abort_streaming)
    return grpc.unary_stream_rpc_method_handler(abort_streaming)
