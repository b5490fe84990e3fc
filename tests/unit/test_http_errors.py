"""The one gRPC status -> HTTP mapping and the JSON error bodies."""

from __future__ import annotations

import grpc

from meshserve.errors import ERROR_CLASSES, OverloadedError, UnavailableError
from meshserve.http_errors import HTTP_STATUS, FieldError, error_body, http_status
from meshserve.limits import LimitExceededError
from meshserve.web.body import BodyTimeoutError, UnsupportedMediaTypeError


def test_every_status_has_an_http_status_and_the_issue_table_holds():
    assert set(HTTP_STATUS) == set(grpc.StatusCode)
    wanted = {"INVALID_ARGUMENT": 400, "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403,
              "NOT_FOUND": 404, "ABORTED": 409, "ALREADY_EXISTS": 409,
              "RESOURCE_EXHAUSTED": 429, "UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504}  # fmt: skip
    for name, status in wanted.items():
        assert HTTP_STATUS[grpc.StatusCode[name]] == status
    for code, cls in ERROR_CLASSES.items():
        assert http_status(cls("x")) == HTTP_STATUS[code]


def test_reasons_that_say_more_than_their_code():
    assert http_status(LimitExceededError("too big")) == 413
    assert http_status(BodyTimeoutError("slow")) == 408
    assert http_status(UnsupportedMediaTypeError("csv")) == 415
    assert http_status(ValueError("a bug")) == 500


def test_bodies_name_the_field_and_overload_says_when_to_retry():
    status, body, headers = error_body(FieldError("inputs.x", "got strings", "float32 numbers"))
    assert status == 400 and headers == {}
    assert body["error"] == {
        "code": 400, "status": "INVALID_ARGUMENT",
        "message": "field 'inputs.x': got strings (expected float32 numbers)",
        "field": "inputs.x", "expected": "float32 numbers",
    }  # fmt: skip
    status, _, headers = error_body(OverloadedError("busy", retry_pushback_ms=2500))
    assert status == 429 and headers["Retry-After"] == "3"
    assert error_body(UnavailableError("draining"))[2]["Retry-After"] == "1"
    status, body, _ = error_body(RuntimeError("secret traceback"))
    assert status == 500 and "secret" not in str(body)
    assert error_body(FieldError("f", "bad"), v2=True)[1] == {"error": "field 'f': bad"}
