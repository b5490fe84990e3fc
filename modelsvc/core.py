"""The transport-free core of a model replica: validation, handler, batcher, backend.

Servicers (modelsvc/servicers.py, modelsvc/v2_servicer.py) convert protobuf to the types here and
call `ModelCore.infer`; nothing in this module knows about grpc.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind

from meshserve.clock import LOOP_TIMERS, Timers
from meshserve.contracts import Contract, FieldSpec, build_contract
from meshserve.errors import InternalError, InvalidInputError, MeshError
from meshserve.modelsvc.backend import ModelBackend, Signature, TensorSpec
from meshserve.modelsvc.batcher import BatchObserver, BatchResult, BatchStats, DynamicBatcher
from meshserve.modelsvc.config import BatchingConfig
from meshserve.modelsvc.handler import Handler, IdentityHandler
from meshserve.modelsvc.validation import RequestValidator
from meshserve.telemetry import EMPTY_CONTEXT, tracing_enabled
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
        callers: Sequence[Context | None] = (None,),
    ) -> InferOutput:
        """Validate, queue and run one request; returns only the requested outputs.

        `callers`: the trace context of each caller whose rows the request carries, in order
        (None: the current context; several for a client-side micro-batch). While tracing, each
        sampled caller gets a ``modelsvc.request`` span in its own trace - its share of the
        batch: SERVER for a remote caller (a stream item), INTERNAL under an RPC's server span -
        covering its queue wait and batch, linked to the ``modelsvc.batch`` span that served it
        (which links back to every share).

        Raises InvalidInputError, OverloadedError, DeadlineExceededError, UnavailableError.
        """
        shares = _share_spans(callers) if tracing_enabled(EMPTY_CONTEXT) else _NO_SHARES
        try:
            rows = self._validate(inputs, output_names)
            deadline = None if timeout_s is None else self._clock() + timeout_s
            result = await self._batcher.submit(
                inputs,
                rows,
                deadline,
                # Untraced (or sampled out): the batch span links to none.
                span_context=shares[0].get_span_context() if shares else None,
                caller_links=[trace.Link(s.get_span_context()) for s in shares[1:]],
            )
        except BaseException as exc:
            for span in shares:
                span.set_status(trace.Status(trace.StatusCode.ERROR, _describe(exc)))
                span.end()
            raise
        if shares:
            _end_shares(shares, result)
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


_NO_SHARES: tuple[Span, ...] = ()


def _share_spans(callers: Sequence[Context | None]) -> tuple[Span, ...]:
    """One ``modelsvc.request`` span per caller whose trace is sampled."""
    return tuple(
        tracer.start_span(
            "modelsvc.request",
            context=caller,
            kind=SpanKind.INTERNAL if caller is None else SpanKind.SERVER,
            attributes={"meshserve.batch_callers": len(callers)},
        )
        for caller in callers
        if tracing_enabled(caller)
    )


def _end_shares(shares: Sequence[Span], result: BatchResult) -> None:
    stats = result.stats
    attributes = {
        "meshserve.batch_size": stats.batch_size,
        "meshserve.batch_requests": stats.batch_requests,
        "meshserve.queue_wait_us": stats.queue_wait_us,
        "meshserve.compute_us": stats.compute_us,
    }
    for span in shares:
        if result.batch_span is not None:
            span.add_link(result.batch_span, {"meshserve.link": "batch"})
        span.set_attributes(attributes)
        span.end()


def _describe(exc: BaseException) -> str:
    return exc.message if isinstance(exc, MeshError) else type(exc).__name__
