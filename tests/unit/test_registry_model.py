"""Registry value types and pure helpers (no Consul needed)."""

from __future__ import annotations

import hashlib
import json

import pytest

from meshserve.errors import InvalidInputError
from meshserve.registry import ConsulConfig, Endpoint, LeaderElection, ServiceInstance
from meshserve.registry.kv import MANIFEST_FORMAT, KVEntry, _assemble, _parse_manifest
from meshserve.registry.registration import ServiceInstance as _SI
from meshserve.registry.session import SessionEvent


def health_entry(tags: list[str], meta: dict[str, str], address: str = "") -> dict:
    return {
        "Node": {"Node": "n1", "Address": "10.0.0.5"},
        "Service": {
            "ID": "m-1",
            "Service": "m",
            "Tags": tags,
            "Meta": meta,
            "Address": address,
            "Port": 7001,
        },
        "Checks": [],
    }


def test_endpoint_version_from_tag_then_meta_and_node_address_fallback() -> None:
    ep = Endpoint.from_health_entry(health_entry(["version=7", "x"], {"version": "6"}))
    assert (ep.version, ep.address, ep.target) == ("7", "10.0.0.5", "10.0.0.5:7001")
    ep = Endpoint.from_health_entry(health_entry([], {"version": "6"}, address="127.0.0.1"))
    assert (ep.version, ep.target) == ("6", "127.0.0.1:7001")
    assert Endpoint.from_health_entry(health_entry([], {})).version == ""
    hash(ep)  # usable in sets despite the meta mapping
    assert Endpoint("a", "m", "::1", 5).target == "[::1]:5"


def test_service_instance_check_definition() -> None:
    inst = ServiceInstance(
        "m", "m-1", "127.0.0.1", 7001, grpc_health_service="meshserve.v1.ModelService",
        check_interval_s=0.5, check_timeout_s=1.0, deregister_critical_after_s=30.0,
    )  # fmt: skip
    assert inst.check() == {
        "CheckID": "service:m-1",
        "Name": "gRPC health of m",
        "GRPC": "127.0.0.1:7001/meshserve.v1.ModelService",
        "Interval": "500ms",
        "Timeout": "1000ms",
        "DeregisterCriticalServiceAfter": "30000ms",
        "GRPCUseTLS": False,
        "TLSSkipVerify": False,
    }
    assert _SI("m", "m-1", "127.0.0.1", 1).grpc_target == "127.0.0.1:1"
    with pytest.raises(InvalidInputError, match="port 0"):
        ServiceInstance("m", "m-1", "127.0.0.1", 0)


def test_large_value_manifest_checks() -> None:
    data = b"abcdefgh"
    manifest = {
        "format": MANIFEST_FORMAT,
        "chunks": 2,
        "size": 8,
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    parsed = _parse_manifest("k", json.dumps(manifest).encode())
    good = {"k/chunks/0": b"abcd", "k/chunks/1": b"efgh"}
    assert _assemble("k", parsed, good) == (data, "")
    assert "missing" in _assemble("k", parsed, {"k/chunks/0": b"abcd"})[1]
    assert "sha256" in _assemble("k", parsed, {"k/chunks/0": b"abcd", "k/chunks/1": b"efgX"})[1]
    assert "bytes" in _assemble("k", parsed, {"k/chunks/0": b"abcd", "k/chunks/1": b"e"})[1]
    with pytest.raises(Exception, match="does not hold a large-value manifest"):
        _parse_manifest("k", b"plain value")


async def test_leadership_lapses_when_renewals_stop_by_the_injected_clock() -> None:
    now = [1000.0]
    election = LeaderElection(ConsulConfig(), "k", "me", ttl_s=10, clock=lambda: now[0])
    election._keeper.session_id, election._keeper.renewed_at = "s1", now[0]
    election._on_session(SessionEvent.CREATED, "s1")
    await election._on_key(KVEntry("k", b"me", 42, session="s1"))
    assert election.is_leader and election.lock_index == 42
    now[0] += 9.9
    assert election.is_leader
    now[0] += 0.2  # no renewal for a whole TTL: stop believing we lead
    assert not election.is_leader and election.lock_index == 0


async def test_client_sends_the_configured_token_and_tls_settings(monkeypatch) -> None:
    from meshserve.registry.client import ConsulClient

    monkeypatch.setenv("CONSUL_HTTP_TOKEN", "from-env")  # the config, not the env, decides
    client = ConsulClient(
        ConsulConfig(
            address="https://consul:8501", token="t0k", ca_file="", cert_file="", verify=False
        )
    )
    try:
        raw = client._client()
        assert raw.prepare_headers() == {"X-Consul-Token": "t0k"}
        assert (raw.http.scheme, raw.http.host, raw.http.port) == ("https", "consul", 8501)
        assert raw.http.verify is False
    finally:
        await client.close()
    anonymous = ConsulClient(ConsulConfig())
    try:
        assert anonymous._client().prepare_headers() == {}
    finally:
        await anonymous.close()
