"""The transport-free core of a model replica: validation, handler, batcher, backend.

Servicers (modelsvc/servicers.py, modelsvc/v2_servicer.py) convert protobuf to the types here and
call `ModelCore.infer`; nothing in this module knows about grpc.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

import numpy as np
from opentelemetry import trace

from meshserve.clock import LOOP_TIMERS, Timers
from meshserve.contracts import Contract, FieldSpec, build_contract
from meshserve.errors import InternalError, InvalidInputError
from meshserve.modelsvc.backend import ModelBackend, Signature, TensorSpec
from meshserve.modelsvc.batcher import BatchObserver, BatchStats, DynamicBatcher
from meshserve.modelsvc.config import BatchingConfig
from meshserve.modelsvc.handler import Handler, IdentityHandler
from meshserve.modelsvc.validation import RequestValidator
from meshserve.telemetry import NO_SPAN, tracing_enabled
from meshserve.tensors import NUMPY_TO_DTYPE

__all__ = ["InferOutput", "ModelCore", "ModelInfo", "model_contract", "served_signature"]

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class ModelInfo:
    """What GetMetadata / ModelMetadata / Consul meta report about the replica."""

    name: str
    version: str
    platform: str
    signature: Signature
    signature_sha256: str
    model_sha256: str
    instance_id: str
    batching: BatchingConfig
    # The replica's typed service (meshserve.contracts), from `signature`.
    contract: Contract


def _field_spec(spec: TensorSpec) -> FieldSpec:
    return FieldSpec(spec.name, int(NUMPY_TO_DTYPE[spec.dtype.newbyteorder("=")]), spec.shape)


def model_contract(name: str, signature: Signature, schema_version: int = 1) -> Contract:
    """The typed contract of model `name` serving `signature` (docs/TYPED.md)."""
    return build_contract(
        "model",
        name,
        [_field_spec(s) for s in signature.inputs],
        [_field_spec(s) for s in signature.outputs],
        schema_version=schema_version,
    )


def served_signature(model: Signature, handler: Handler) -> Signature:
    """The model's signature plus the outputs its handler declares (``extra_outputs``)."""
    extra = tuple(handler.extra_outputs)
    taken = {s.name for s in model.outputs}
    for spec in extra:
        if spec.name in taken:
            raise InvalidInputError(
                f"handler extra output '{spec.name}' is already an output of the model"
            )
        taken.add(spec.name)
    return Signature(model.inputs, model.outputs + extra) if extra else model


@dataclass(frozen=True)
class InferOutput:
    outputs: Arrays
    stats: BatchStats


class ModelCore:
    """Runs validated requests through the shared dynamic batcher and the model."""

    def __init__(
        self,
        *,
        name: str,
        version: str,
        backend: ModelBackend,
        batching: BatchingConfig,
        handler: Handler | None = None,
        schema_version: int = 1,
        instance_id: str = "",
        executor: concurrent.futures.Executor | None = None,
        observer: BatchObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
        timers: Timers = LOOP_TIMERS,
    ) -> None:
        self._backend = backend
        self._handler: Handler = handler or IdentityHandler()
        signature = served_signature(backend.signature, self._handler)
        self._model_outputs = tuple(s.name for s in backend.signature.outputs)
        self._extra_outputs = tuple(s.name for s in signature.outputs[len(self._model_outputs) :])
        self._output_names = (*self._model_outputs, *self._extra_outputs)
        self._validate = RequestValidator(
            signature, allow_non_finite=self._handler.allow_non_finite
        )
        self._clock = clock
        self.ready = False
        self.info = ModelInfo(
            name=name,
            version=version,
            platform=backend.platform,
            signature=signature,
            signature_sha256=signature.sha256(),
            model_sha256=backend.model_sha256,
            instance_id=instance_id,
            batching=batching,
            contract=model_contract(name, signature, schema_version),
        )
        self._batcher = DynamicBatcher(
            batching,
            self._run_batch,
            executor=executor,
            mergeable=signature.batched,
            clock=clock,
            timers=timers,
            observer=observer,
        )

    @property
    def batcher(self) -> DynamicBatcher:
        return self._batcher

    def set_instance_id(self, instance_id: str) -> None:
        """Set once the port is known (the default id contains it)."""
        from dataclasses import replace

        self.info = replace(self.info, instance_id=instance_id)

    def start(self) -> None:
        self._batcher.start()
        self.ready = True

    async def stop(self, timeout_s: float) -> None:
        self.ready = False
        await self._batcher.stop(timeout_s)

    def warm_up(self) -> None:
        """One blocking call with a single zero row, so the first request pays no lazy init."""
        sample: Arrays = {}
        for spec in self.info.signature.inputs:
            shape = tuple(1 if d < 0 else d for d in spec.shape)
            sample[spec.name] = np.zeros(shape, dtype=spec.dtype)
        try:
            self._run_batch(sample)
        except Exception as exc:  # a handler may reject zeros; warm-up is best effort
            log.warning("warm-up call failed: %s", exc)

    async def infer(
        self,
        inputs: Mapping[str, np.ndarray],
        output_names: Sequence[str] = (),
        *,
        timeout_s: float | None = None,
        caller_links: Sequence[trace.Link] = (),
    ) -> InferOutput:
        """Validate, queue and run one request; returns only the requested outputs.

        `caller_links`: spans of further callers whose rows the request carries (a client-side
        micro-batch); the request and batch spans link to them. The request runs inside a
        ``modelsvc.request`` span while ``tracing_enabled()``.

        Raises InvalidInputError, OverloadedError, DeadlineExceededError, UnavailableError.
        """
        span_cm: AbstractContextManager[trace.Span | None] = (
            tracer.start_as_current_span("modelsvc.request", links=caller_links)
            if tracing_enabled()
            else NO_SPAN
        )
        with span_cm as span:
            rows = self._validate(inputs, output_names)
            deadline = None if timeout_s is None else self._clock() + timeout_s
            result = await self._batcher.submit(
                inputs,
                rows,
                deadline,
                # Untraced (or sampled out): the batch span links to neither.
                span_context=None if span is None else span.get_span_context(),
                caller_links=() if span is None else caller_links,
            )
            if span is not None:
                stats = result.stats
                span.set_attribute("meshserve.batch_size", stats.batch_size)
                span.set_attribute("meshserve.batch_requests", stats.batch_requests)
                span.set_attribute("meshserve.queue_wait_us", stats.queue_wait_us)
                span.set_attribute("meshserve.compute_us", stats.compute_us)
        outputs = result.outputs
        return InferOutput(
            {n: outputs[n] for n in output_names or self._output_names}, result.stats
        )

    def _run_batch(self, inputs: Arrays) -> Arrays:
        """Executor thread: handler hooks around one session call."""
        prepared = self._handler.preprocess(inputs)
        outputs = self._backend.run(prepared, self._model_outputs)
        outputs = self._handler.postprocess(outputs)
        for name in self._extra_outputs:
            if name not in outputs:
                raise InternalError(
                    f"handler declared output '{name}' (extra_outputs) but its postprocess did "
                    "not return it"
                )
        return outputs
