"""Admission control of a replica: counters, limits, refusals naming the limit, per client."""

from __future__ import annotations

import grpc
import pytest

from meshserve.errors import InvalidInputError, OverloadedError
from meshserve.modelsvc.admission import Admission
from meshserve.modelsvc.cli import load_settings
from meshserve.modelsvc.config import AdmissionConfig, config_from_mapping


def refused(admission: Admission, rows: int = 1, client: str = "") -> OverloadedError:
    with pytest.raises(OverloadedError) as info:
        admission.admit(rows, client)
    return info.value


def test_requests_past_the_in_flight_limit_are_refused_with_pushback_until_one_finishes():
    admission = Admission(AdmissionConfig(max_in_flight_requests=2), pushback_ms=40)
    admission.admit(1)
    admission.admit(3)
    err = refused(admission)
    assert err.code is grpc.StatusCode.RESOURCE_EXHAUSTED and err.retry_pushback_ms == 40
    assert "max_in_flight_requests" in err.message
    assert (admission.in_flight_requests, admission.in_flight_rows, admission.rejected) == (2, 4, 1)
    admission.release(3)
    admission.admit(1)
    assert admission.in_flight_requests == 2


def test_rows_limit_admits_a_lone_large_request_but_not_one_on_top():
    admission = Admission(AdmissionConfig(max_in_flight_rows=8), pushback_ms=10)
    assert admission.counts_rows and not admission.per_client
    assert not Admission(AdmissionConfig(), 10).counts_rows  # servicers then skip the shapes
    admission.admit(20)  # alone: admitted (max_elements bounds its size)
    assert "max_in_flight_rows" in refused(admission, 1).message
    admission.release(20)
    admission.admit(5)
    admission.admit(3)
    refused(admission, 1)


def test_per_client_limit_counts_each_client_apart_and_forgets_idle_clients():
    admission = Admission(
        AdmissionConfig(max_in_flight_requests=0, max_client_in_flight_requests=1), 10
    )
    assert admission.per_client
    admission.admit(1, "a")
    admission.admit(1, "b")
    assert "max_client_in_flight_requests" in refused(admission, 1, "a").message
    admission.release(1, "a")
    admission.admit(1, "a")
    admission.release(1, "a")
    admission.release(1, "b")
    assert admission._by_client == {} and admission.in_flight_requests == 0


def test_limits_are_config_flags_and_file_settings():
    config = config_from_mapping(load_settings(
        {"model": "m.onnx", "name": "n", "admission": {"max_in_flight_rows": 64}},
        {"max_in_flight_requests": 16, "max_client_in_flight_requests": 4,
         "client_id_metadata": "x-client-id"},
    ))  # fmt: skip
    assert config.admission == AdmissionConfig(16, 64, 4, "x-client-id")
    assert AdmissionConfig().max_in_flight_requests < config.batching.queue_max
    with pytest.raises(InvalidInputError, match="max_in_flight_rows must be >= 0"):
        AdmissionConfig(max_in_flight_rows=-1)
    with pytest.raises(InvalidInputError, match="lower-case"):
        AdmissionConfig(client_id_metadata="X-Client")
