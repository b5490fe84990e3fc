"""The naive monolith: the baseline meshserve's cost per request is measured against.

``python -m bench.monolith [--port 0] [--threads 1]`` serves ``meshserve.v1.Orchestrator``
(Execute and ExecuteStream) from one grpc.aio process that runs the example plans' ONNX models
inline on its event loop: no registry, no replicas, no batching, no tracing, no admission. It
is what "wrap the models in a web server" gives, and it prints ``MESHSERVE_READY host:port``
like every meshserve server so ``bench.common.ServerProcess`` can start it.

Plans served (same names, inputs and outputs as meshserve's):
- ``digits-pipeline``: scaler -> mlp (outputs label, probabilities);
- ``digits-ensemble``: scaler -> logreg, mlp, forest -> majority vote (output label);
- ``bench-wide``: wide_mlp (output probabilities).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort

from bench.common import ServerProcess, serve_grpc_until_sigterm
from meshserve import tensors
from meshserve.v1 import orchestrator_pb2, orchestrator_pb2_grpc, tensor_pb2

__all__ = ["Models", "monolith_process", "serve"]

MODELS_DIR = Path(__file__).resolve().parent.parent / "examples" / "models"
Outputs = dict[str, np.ndarray]


class Models:
    """One onnxruntime session per example model, run inline (no executor)."""

    def __init__(self, models_dir: Path, threads: int) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._sessions = {
            name: ort.InferenceSession(
                str(models_dir / f"{name}.onnx"), options, providers=["CPUExecutionProvider"]
            )
            for name in ("scaler", "mlp", "logreg", "forest", "wide_mlp")
        }
        self.plans: dict[str, Callable[[np.ndarray], Outputs]] = {
            "digits-pipeline": self.pipeline,
            "digits-ensemble": self.ensemble,
            "bench-wide": self.wide,
        }

    def run(self, model: str, x: np.ndarray) -> Outputs:
        session = self._sessions[model]
        names = [o.name for o in session.get_outputs()]
        values = session.run(names, {"input": x})
        return dict(zip(names, values, strict=True))

    def pipeline(self, x: np.ndarray) -> Outputs:
        out = self.run("mlp", self.run("scaler", x)["scaled"])
        return {"label": out["label"], "probabilities": out["probabilities"]}

    def ensemble(self, x: np.ndarray) -> Outputs:
        scaled = self.run("scaler", x)["scaled"]
        labels = np.stack([self.run(m, scaled)["label"] for m in ("logreg", "mlp", "forest")])
        # Majority vote per row; ties go to the smallest label (meshserve's majority_vote).
        counts = np.stack([(labels == k).sum(axis=0) for k in range(10)])
        return {"label": counts.argmax(axis=0).astype(np.int64)}

    def wide(self, x: np.ndarray) -> Outputs:
        return {"probabilities": self.run("wide_mlp", x)["probabilities"]}


class MonolithServicer(orchestrator_pb2_grpc.OrchestratorServicer):
    """Execute/ExecuteStream over `Models`, with the least checking that keeps it correct."""

    def __init__(self, models: Models) -> None:
        self._models = models

    def _execute(
        self, request: orchestrator_pb2.ExecuteRequest
    ) -> orchestrator_pb2.ExecuteResponse:
        plan = self._models.plans[request.plan]
        outputs = plan(tensors.to_numpy(request.inputs["input"]))
        reply = orchestrator_pb2.ExecuteResponse(id=request.id, plan=request.plan, plan_version=1)
        for name, value in outputs.items():
            reply.outputs[name].CopyFrom(tensors.from_numpy(value))
        return reply

    async def Execute(
        self, request: orchestrator_pb2.ExecuteRequest, context: grpc.aio.ServicerContext
    ) -> orchestrator_pb2.ExecuteResponse:
        try:
            return self._execute(request)
        except (KeyError, ValueError) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc)[:200])
            raise  # abort raises; this keeps type checkers satisfied

    async def ExecuteStream(
        self,
        request_iterator: AsyncIterator[orchestrator_pb2.ExecuteRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[orchestrator_pb2.ExecuteResponse]:
        async for request in request_iterator:
            try:
                yield self._execute(request)
            except (KeyError, ValueError) as exc:
                status = tensor_pb2.Status(code=grpc.StatusCode.INVALID_ARGUMENT.value[0])
                status.message = str(exc)[:200]
                yield orchestrator_pb2.ExecuteResponse(id=request.id, status=status)


async def serve(host: str, port: int, threads: int) -> None:
    """Serve until SIGTERM."""
    server = grpc.aio.server()
    orchestrator_pb2_grpc.add_OrchestratorServicer_to_server(
        MonolithServicer(Models(MODELS_DIR, threads)), server
    )
    await serve_grpc_until_sigterm(server, host, port)


def monolith_process(log_path: Path, threads: int = 1) -> ServerProcess:
    """The monolith in a child process (a context manager; stopped by PID on exit)."""
    root = str(Path(__file__).resolve().parent.parent)
    args = ["--port", "0", "--threads", str(threads)]
    return ServerProcess(args, log_path, module="bench.monolith", cwd=root)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port, args.threads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
