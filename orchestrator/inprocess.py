"""``InProcessCaller``: a ModelCaller that runs ONNX models with onnxruntime in this process.

It is the engine's test double *below* the ModelCaller interface and the "in-process floor" for
benchmarks: no network, no batching, one onnxruntime session per model, inference in a thread
pool (never on the event loop). Signatures come from the sessions themselves.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from meshserve.errors import InvalidInputError, NotFoundError
from meshserve.modelsvc.backend import onnx_specs
from meshserve.modelsvc.converters import spec_to_proto
from meshserve.orchestrator.caller import CallerCounters, EndpointSnapshot, FaultSpec
from meshserve.tensors import NUMPY_TO_DTYPE
from meshserve.v1 import model_pb2

__all__ = ["InProcessCaller", "InProcessConfig"]


@dataclass(frozen=True)
class InProcessConfig:
    """Threads for onnxruntime (intra-op) and for the executor that runs sessions."""

    intra_op_threads: int = 1
    executor_threads: int = 2


class _Model:
    def __init__(self, name: str, path: Path, config: InProcessConfig) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = config.intra_op_threads
        options.inter_op_num_threads = 1
        self.name = name
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [spec_to_proto(s) for s in onnx_specs(self.session.get_inputs())]
        self.outputs = [spec_to_proto(s) for s in onnx_specs(self.session.get_outputs())]
        self.sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
        self.requests = 0
        self.failures = 0

    def metadata(self) -> model_pb2.ModelMetadata:
        return model_pb2.ModelMetadata(
            name=self.name,
            version="inprocess",
            platform="onnxruntime",
            inputs=self.inputs,
            outputs=self.outputs,
            model_sha256=self.sha256,
            instance_id=f"{self.name}-inprocess",
        )

    def check(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        expected = {s.name: s for s in self.inputs}
        feed: dict[str, np.ndarray] = {}
        for name, spec in expected.items():
            if name not in inputs:
                raise InvalidInputError(
                    f"model '{self.name}': missing input '{name}' (got {sorted(inputs)})"
                )
            arr = np.asarray(inputs[name])
            dtype = NUMPY_TO_DTYPE.get(arr.dtype.newbyteorder("="))
            if (
                dtype != spec.dtype
                or arr.ndim != len(spec.shape)
                or any(d >= 0 and d != a for d, a in zip(spec.shape, arr.shape, strict=True))
            ):
                raise InvalidInputError(
                    f"model '{self.name}' input '{name}': expects dtype {spec.dtype} shape "
                    f"{list(spec.shape)}, got {arr.dtype.name} {list(arr.shape)}"
                )
            feed[name] = np.ascontiguousarray(arr)
        extra = sorted(set(inputs) - set(expected))
        if extra:
            raise InvalidInputError(
                f"model '{self.name}': unknown inputs {extra} (inputs: {sorted(expected)})"
            )
        return feed


class InProcessCaller:
    """ModelCaller over local onnxruntime sessions, keyed by model name."""

    def __init__(
        self, models: Mapping[str, str | Path], config: InProcessConfig | None = None
    ) -> None:
        self.config = config or InProcessConfig()
        self._models = {
            name: _Model(name, Path(path), self.config) for name, path in models.items()
        }
        self._executor = ThreadPoolExecutor(
            max_workers=self.config.executor_threads, thread_name_prefix="inprocess-ort"
        )
        self._calls = 0

    @classmethod
    def from_dir(
        cls, directory: str | Path, config: InProcessConfig | None = None
    ) -> InProcessCaller:
        """Every ``*.onnx`` of `directory`, named by file stem."""
        paths = sorted(Path(directory).glob("*.onnx"))
        return cls({p.stem: p for p in paths}, config)

    def _get(self, model: str) -> _Model:
        found = self._models.get(model)
        if found is None:
            raise NotFoundError(f"model '{model}' is not loaded (models: {sorted(self._models)})")
        return found

    async def infer(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        *,
        timeout_s: float | None = None,
        output_names: Sequence[str] = (),
        **_: object,  # version and routing key: one local session per model, no routing
    ) -> dict[str, np.ndarray]:
        m = self._get(model)
        feed = m.check(inputs)
        names = list(output_names) or [s.name for s in m.outputs]
        m.requests += 1
        self._calls += 1
        loop = asyncio.get_running_loop()
        try:
            results = await asyncio.wait_for(
                loop.run_in_executor(self._executor, m.session.run, names, feed), timeout_s
            )
        except Exception:
            m.failures += 1
            raise
        return dict(zip(names, results, strict=True))

    async def metadata(self, model: str, version: str = "") -> model_pb2.ModelMetadata:
        return self._get(model).metadata()

    def models(self) -> Sequence[str]:
        return sorted(self._models)

    def retain(self, models: Collection[str]) -> None:
        """Nothing to release: the sessions are fixed at construction."""

    def snapshot(self, model: str = "") -> list[EndpointSnapshot]:
        return [
            EndpointSnapshot(
                model=m.name,
                instance_id=f"{m.name}-inprocess",
                address="inprocess",
                version="inprocess",
                state="passing",
                requests_total=m.requests,
                failures_total=m.failures,
            )
            for m in self._models.values()
            if not model or m.name == model
        ]

    def drain(self, model: str, instance_id: str, drain: bool = True) -> int:
        self._get(model)
        return 0

    def inject_fault(self, fault: FaultSpec) -> str:
        raise InvalidInputError("the in-process caller does not support fault injection")

    def clear_faults(self, model: str = "") -> int:
        return 0

    def counters(self) -> CallerCounters:
        return CallerCounters(calls_total=self._calls, attempts_total=self._calls)

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
