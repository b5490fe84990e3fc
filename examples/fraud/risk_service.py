"""A small external risk service for the fraud example: the "web API call" of business logic.

``POST /v1/risk`` with ``{"amount": [...], "channel": [...]}`` answers ``{"risk": [...]}``, one
score in [0, 1] per transaction (deterministic: a bigger amount and a riskier channel score
higher). ``GET /healthz`` answers ok. With ``--record FILE`` every request's ``traceparent``
header is appended to FILE (one JSON line each), so a test can see the service join the trace.

Run: ``python -m examples.fraud.risk_service [--port 0] [--record FILE]``; it prints
``RISK_READY http://127.0.0.1:<port>`` once it serves.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from aiohttp import web

__all__ = ["make_app", "risk_of"]

CHANNEL_RISK = {0: 0.0, 1: 0.15, 2: 0.35}  # in person, online, phone


def risk_of(amount: float, channel: int) -> float:
    """The service's score of one transaction."""
    return round(min(1.0, max(0.0, amount / 5000.0 + CHANNEL_RISK.get(channel, 0.5))), 6)


def make_app(record: Path | None = None) -> web.Application:
    """The aiohttp application (also used in-process by tests)."""

    async def score(request: web.Request) -> web.Response:
        if record is not None:
            with record.open("a", encoding="utf-8") as out:
                out.write(json.dumps({"traceparent": request.headers.get("traceparent", "")}))
                out.write("\n")
        try:
            body = await request.json()
            amounts = [float(a) for a in body["amount"]]
            channels = [int(c) for c in body["channel"]]
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": f"bad request: {exc}"}, status=400)
        if len(amounts) != len(channels):
            return web.json_response({"error": "amount and channel differ in length"}, status=400)
        return web.json_response(
            {"risk": [risk_of(a, c) for a, c in zip(amounts, channels, strict=True)]}
        )

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application(client_max_size=1 << 20)
    app.add_routes([web.post("/v1/risk", score), web.get("/healthz", healthz)])
    return app


async def _serve(host: str, port: int, record: Path | None) -> None:
    runner = web.AppRunner(make_app(record), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    print(f"RISK_READY http://{host}:{bound}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--record", default="", help="append each request's traceparent here")
    args = parser.parse_args()
    try:
        asyncio.run(_serve(args.host, args.port, Path(args.record) if args.record else None))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
