"""A one-shot ``grpc.health.v1`` probe.

    python -m meshserve.clients.healthcheck HOST:PORT [--service S]

Exit status 0 when the server answers SERVING, 1 otherwise (NOT_SERVING, unreachable, timeout).
Used as the container HEALTHCHECK and by ``meshserve status``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

__all__ = ["check_health", "main"]

UNREACHABLE = "UNREACHABLE"


async def check_health(address: str, service: str = "", timeout_s: float = 2.0) -> str:
    """Health status name of `service` at `address` ("SERVING", "NOT_SERVING", ...).

    Returns ``"UNREACHABLE"`` when the call fails (connection refused, deadline, unknown service).
    """
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return "SERVICE_UNKNOWN"
            return UNREACHABLE
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="meshserve.clients.healthcheck", description=__doc__.splitlines()[0]
    )
    parser.add_argument("address", help="host:port of the gRPC server")
    parser.add_argument("--service", default="", help="service name to check ('' = the server)")
    parser.add_argument("--timeout-s", type=float, default=2.0, help="deadline of the check")
    args = parser.parse_args(argv)
    status = asyncio.run(check_health(args.address, args.service, args.timeout_s))
    print(f"{args.address} {args.service or '<server>'}: {status}")
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main())
