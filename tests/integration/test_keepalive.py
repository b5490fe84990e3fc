"""An idle long-lived InferStream survives its client's keepalive pings.

gRPC servers accept pings without data only every 5 minutes by default and answer more with
GOAWAY "too many pings" after two strikes; the orchestrator pings its replica streams every
10 s, so its next call failed after about 2.5 idle minutes. Here a client pings every 6 s
(without the client's own two-pings-without-data cap) and stays idle for three intervals: the
same stream must still answer. Without `meshserve.serving.server_options` it gets GOAWAY.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import numpy as np
import pytest

from meshserve.tensors import from_numpy
from meshserve.v1 import model_pb2, model_pb2_grpc

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PING_MS = 6_000
IDLE_S = 3.5 * PING_MS / 1000  # the idle time is what is under test


async def test_idle_stream_survives_keepalive_pings(spawn, models_dir: Path) -> None:
    replica = spawn(
        "model", "serve", str(models_dir / "scaler.onnx"), "--name", "scaler", "--version", "1",
        "--no-register", "--metrics-port", "-1",
    )  # fmt: skip
    options = [
        ("grpc.keepalive_time_ms", PING_MS),
        ("grpc.keepalive_timeout_ms", 5_000),
        ("grpc.http2.max_pings_without_data", 0),  # keep pinging however long it idles
    ]
    x = from_numpy(np.zeros((1, 64), dtype=np.float32))
    async with grpc.aio.insecure_channel(replica.address, options=options) as channel:
        stream = model_pb2_grpc.ModelServiceStub(channel).InferStream()
        await stream.write(model_pb2.InferRequest(id="before", inputs={"input": x}))
        assert (await stream.read()).id == "before"
        await asyncio.sleep(IDLE_S)
        await stream.write(model_pb2.InferRequest(id="after", inputs={"input": x}))
        reply = await stream.read()
        assert reply.id == "after" and not reply.status.code, reply.status
        await stream.done_writing()
