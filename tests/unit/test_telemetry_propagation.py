"""Trace context for stream items and batch spans, the JSON-lines exporter, and the config."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from meshserve.telemetry import (
    JsonLinesSpanExporter,
    TelemetryConfig,
    _state,
    context_from_traceparent,
    current_traceparent,
    read_trace,
    start_batch_span,
    start_request_span,
    traceparent_of,
    traceparent_sampled,
)


@pytest.fixture
def recorder(monkeypatch):
    monkeypatch.setattr(_state, "_enabled", True)
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "svc"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("test"), exporter


def test_current_traceparent_round_trips(recorder):
    tracer, _ = recorder
    assert current_traceparent() == ""  # no span: nothing to propagate
    with tracer.start_as_current_span("caller") as span:
        tp = current_traceparent()
    sc = span.get_span_context()
    assert tp.startswith(f"00-{sc.trace_id:032x}-{sc.span_id:016x}-")
    assert int(tp[-2:], 16) & 0x01  # sampled
    ctx = context_from_traceparent(tp)
    assert ctx is not None
    assert trace.get_current_span(ctx).get_span_context().span_id == sc.span_id
    for bad in ("", "garbage", "00-" + "0" * 32 + "-" + "0" * 16 + "-01"):
        assert context_from_traceparent(bad) is None


def test_batch_span_is_a_root_linked_to_every_request(recorder):
    tracer, exporter = recorder
    callers = [tracer.start_span(f"model.call {i}") for i in range(4)]
    tps = [traceparent_of(c.get_span_context()) for c in callers]
    # The ambient span ("outer") must not become the batch's parent.
    with (
        tracer.start_as_current_span("outer"),
        start_batch_span(
            "modelsvc.batch",
            [*tps, tps[0], "bogus"],
            tracer=tracer,
            attributes={"meshserve.batch_size": 12},
        ) as batch,
        tracer.start_as_current_span("modelsvc.inference"),
    ):
        pass
    spans = {s.name: s for s in exporter.get_finished_spans()}
    b = spans["modelsvc.batch"]
    assert b.parent is None
    assert [ln.context.span_id for ln in b.links] == [c.get_span_context().span_id for c in callers]
    assert b.attributes["meshserve.batch_size"] == 12
    assert spans["modelsvc.inference"].parent.span_id == batch.get_span_context().span_id


def test_request_span_is_child_of_first_caller_and_links_the_rest(recorder):
    tracer, exporter = recorder
    callers = [tracer.start_span(f"c{i}") for i in range(3)]
    tps = [traceparent_of(c.get_span_context()) for c in callers]
    with start_request_span("modelsvc.request", ["", *tps], tracer=tracer):
        pass
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "modelsvc.request"]
    first = callers[0].get_span_context()
    assert span.parent.span_id == first.span_id and span.context.trace_id == first.trace_id
    assert [ln.context.span_id for ln in span.links] == [
        c.get_span_context().span_id for c in callers[1:]
    ]
    with start_request_span("orphan", ["junk"], tracer=tracer):
        pass
    orphan = next(s for s in exporter.get_finished_spans() if s.name == "orphan")
    assert orphan.parent is None


def test_jsonl_exporter_and_merged_trace_with_linked_batch(tmp_path: Path, recorder):
    _, _ = recorder
    files = []
    tracers = []
    for svc in ("orchestrator", "digits"):
        path = tmp_path / f"{svc}.jsonl"
        files.append(path)
        provider = TracerProvider(resource=Resource.create({"service.name": svc}))
        provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(path)))
        tracers.append(provider.get_tracer("t"))
    orch, model = tracers
    with orch.start_as_current_span("plan p") as root:
        tp = current_traceparent()
        with start_request_span("modelsvc.request", [tp], tracer=model):
            pass
        with (
            start_batch_span("modelsvc.batch", [tp], tracer=model),
            model.start_as_current_span("modelsvc.inference"),
        ):
            pass
    (tmp_path / "torn.jsonl").write_text('{"trace_id": "ab', encoding="utf-8")
    tid = f"{root.get_span_context().trace_id:032x}"
    spans = read_trace([tmp_path], tid)
    assert {s.name for s in spans} == {
        "plan p",
        "modelsvc.request",
        "modelsvc.batch",
        "modelsvc.inference",
    }
    by_name = {s.name: s for s in spans}
    assert by_name["modelsvc.request"].parent_span_id == by_name["plan p"].span_id
    assert by_name["modelsvc.batch"].linked_span_ids == (by_name["plan p"].span_id,)
    assert by_name["modelsvc.request"].service == "digits"
    line = json.loads(files[0].read_text().splitlines()[0])
    assert line["trace_id"] == tid and line["service"] == "orchestrator"


def test_config_from_env():
    # The process edge samples 10% of new traces unless OTEL_TRACES_SAMPLER says otherwise.
    assert TelemetryConfig.from_env({}) == TelemetryConfig(sample_ratio=0.1)
    assert TelemetryConfig.from_env({"OTEL_TRACES_SAMPLER": "always_on"}).sample_ratio is None
    assert TelemetryConfig.from_env({"MESHSERVE_TRACE_SAMPLE_RATIO": "1"}).sample_ratio == 1.0
    with pytest.raises(ValueError, match="must be in"):
        TelemetryConfig.from_env({"MESHSERVE_TRACE_SAMPLE_RATIO": "2"})
    off = TelemetryConfig.from_env({"MESHSERVE_TRACING": "off", "OTEL_TRACES_EXPORTER": "console"})
    assert not off.enabled
    assert not TelemetryConfig.from_env({"OTEL_SDK_DISABLED": "true"}).enabled
    otlp = TelemetryConfig.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://j:4317"})
    assert otlp.otlp and not otlp.console
    assert not TelemetryConfig.from_env(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://j:4317", "OTEL_TRACES_EXPORTER": "none"}
    ).otlp
    both = TelemetryConfig.from_env({"OTEL_TRACES_EXPORTER": "otlp, console"})
    assert both.otlp and both.console
    assert TelemetryConfig.from_env({}, buffer_max_traces=64).buffer_max_traces == 64
    assert TelemetryConfig.from_env({"MESHSERVE_TRACE_BUFFER": "5"}).buffer_max_traces == 5
    with pytest.raises(ValueError, match="MESHSERVE_TRACE_BUFFER='x' is not an integer"):
        TelemetryConfig.from_env({"MESHSERVE_TRACE_BUFFER": "x"})


_CHILD = textwrap.dedent(
    """
    import json, sys
    from opentelemetry import trace
    from meshserve.telemetry import (
        client_interceptors, get_trace, server_interceptors, setup_telemetry, slowest,
    )
    t = setup_telemetry("svc", "svc-1", "9.9", buffer_max_traces=8)
    with trace.get_tracer("x").start_as_current_span("plan demo") as span:
        recording = span.is_recording()
    out = {
        "enabled": t.enabled,
        "server": len(server_interceptors()),
        "client": len(client_interceptors()),
        "recording": recording,
        "slowest": [s.root_name for s in slowest(5)],
    }
    if t.enabled:
        tid = format(span.get_span_context().trace_id, "032x")
        out["spans"] = [s.name for s in get_trace(tid)]
        out["resource"] = dict(t.provider.resource.attributes)
    t.shutdown()
    print(json.dumps(out))
    """
)


def _run_child(env_extra: dict[str, str], tmp_path: Path) -> dict:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "MESHSERVE_"))}
    env["OTEL_TRACES_SAMPLER"] = "parentbased_always_on"  # the span below must be recorded
    env.update(env_extra)
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_setup_telemetry_installs_provider_buffer_and_file(tmp_path: Path):
    out = _run_child({"MESHSERVE_TRACE_DIR": str(tmp_path / "traces")}, tmp_path)
    assert out["enabled"] and out["recording"]
    assert out["server"] == 1 and out["client"] == 4
    assert out["spans"] == ["plan demo"] and out["slowest"] == ["plan demo"]
    res = out["resource"]
    assert (res["service.name"], res["service.instance.id"], res["service.version"]) == (
        "svc",
        "svc-1",
        "9.9",
    )
    (file,) = (tmp_path / "traces").glob("svc-svc-1-*.jsonl")
    assert json.loads(file.read_text().splitlines()[0])["name"] == "plan demo"


@pytest.mark.parametrize("switch", [{"MESHSERVE_TRACING": "off"}, {"OTEL_SDK_DISABLED": "true"}])
def test_tracing_off_installs_nothing(tmp_path: Path, switch):
    out = _run_child({**switch, "MESHSERVE_TRACE_DIR": str(tmp_path / "traces")}, tmp_path)
    assert out == {"enabled": False, "server": 0, "client": 0, "recording": False, "slowest": []}
    assert not (tmp_path / "traces").exists()


def test_head_sampling_follows_a_sampled_parent() -> None:
    from opentelemetry.sdk.resources import Resource

    from meshserve.telemetry import build_tracer_provider

    provider, _ = build_tracer_provider(TelemetryConfig(sample_ratio=0.0), Resource.create({}))
    tracer = provider.get_tracer("t")
    assert not tracer.start_span("new trace").is_recording()  # ratio 0: new traces dropped
    parent = context_from_traceparent("00-" + "ab" * 16 + "-" + "cd" * 8 + "-01")
    assert tracer.start_span("child", context=parent).is_recording()  # a sampled caller wins
    provider.shutdown()


def test_traceparent_sampled_reads_the_flag_without_parsing() -> None:
    trace_id, span_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    assert traceparent_sampled(f"00-{trace_id}-{span_id}-01")
    assert traceparent_sampled(f"00-{trace_id}-{span_id}-03")  # other flags set too
    assert not traceparent_sampled(f"00-{trace_id}-{span_id}-00")
    for bad in ("", "00-abc-01", f"00-{trace_id}-{span_id}-zz"):
        assert not traceparent_sampled(bad)
