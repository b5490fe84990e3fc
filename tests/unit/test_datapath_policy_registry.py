"""The policy table's door: a test-only affinity policy added through ``register_policy``,
configured by name through the config loader and exercised through the real ModelRouter."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from meshserve.errors import InvalidInputError
from meshserve.orchestrator.datapath.config import (
    DataPathConfig,
    ModelPathConfig,
    datapath_config_from_mapping,
    load_datapath_config,
)
from meshserve.orchestrator.datapath.policy import (
    POLICIES,
    C,
    CallInfo,
    PowerOfTwoChoices,
    make_policy,
    register_policy,
)
from tests.unit.test_datapath_router import SCRIPT, Ep, call, make_router, unavailable


def _weight(key: str, instance_id: str) -> int:
    digest = hashlib.blake2b(f"{key}\0{instance_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class RendezvousAffinity:
    """Sticky by routing key: rendezvous (highest random weight) hashing of (key, replica).

    Invariants: a key goes to the same replica while that replica is a candidate; when it is not
    (ejected, draining, already tried by this call) the key's next replica in hash order takes
    it, and only the keys of the missing replica move. Calls without a key go to `fallback`.
    """

    def __init__(self, rng: random.Random, fallback: str = "round_robin") -> None:
        if fallback == STICKY:
            raise ValueError(f"fallback={fallback!r} (expected a policy without affinity)")
        self.fallback = make_policy(fallback, rng=rng)
        self.seen: list[tuple[int, frozenset[str]]] = []  # (attempt, tried) of keyed picks

    def pick(self, candidates: Sequence[C], call: CallInfo) -> C:
        key = call.routing_key
        if not key:
            return self.fallback.pick(candidates, call)
        self.seen.append((call.attempt, frozenset(call.tried)))
        return max(candidates, key=lambda c: _weight(key, c.instance_id))


STICKY = "sticky_test"
KEYS = [f"user-{i}" for i in range(24)]


@pytest.fixture(autouse=True)
def sticky() -> Iterator[None]:
    register_policy(STICKY, RendezvousAffinity)
    yield
    POLICIES.unregister(STICKY)


def _configured(tmp_path: Path) -> DataPathConfig:
    path = tmp_path / "datapath.yaml"
    path.write_text(
        f"policy: {STICKY}\n"
        "policy_options: {fallback: round_robin}\n"
        "models:\n"
        "  other: {policy: p2c}\n"
    )
    return load_datapath_config(path)


def test_the_config_file_names_a_registered_policy_per_model(tmp_path: Path) -> None:
    config = _configured(tmp_path)
    assert config.policy_for("m") == (STICKY, {"fallback": "round_robin"})
    assert config.policy_for("other") == ("p2c", {})
    assert isinstance(make_policy(*config.policy_for("m")), RendezvousAffinity)
    assert isinstance(make_policy(*config.policy_for("other")), PowerOfTwoChoices)


async def test_keys_stick_to_one_replica_and_unkeyed_calls_spread(tmp_path: Path) -> None:
    policy = make_policy(*_configured(tmp_path).policy_for("m"))
    router, _, _ = make_router(policy=policy)
    router.update_endpoints([Ep("a"), Ep("b"), Ep("c")])
    owner = {k: (await call(router, routing_key=k)).instance_id for k in KEYS}
    for k in KEYS:
        assert (await call(router, routing_key=k)).instance_id == owner[k]
    assert set(owner.values()) == {"a", "b", "c"}  # 24 keys hash over all three
    assert {(await call(router)).instance_id for _ in range(3)} == {"a", "b", "c"}


async def test_a_missing_owner_moves_only_its_keys_and_gets_them_back(tmp_path: Path) -> None:
    policy = make_policy(*_configured(tmp_path).policy_for("m"))
    router, _, _ = make_router(policy=policy)
    router.update_endpoints([Ep("a"), Ep("b"), Ep("c")])
    owner = {k: (await call(router, routing_key=k)).instance_id for k in KEYS}
    router.drain("a")
    moved = {k: (await call(router, routing_key=k)).instance_id for k in KEYS}
    assert all(moved[k] == owner[k] for k in KEYS if owner[k] != "a")
    assert all(moved[k] in ("b", "c") for k in KEYS if owner[k] == "a")
    router.drain("a", drain=False)
    assert {k: (await call(router, routing_key=k)).instance_id for k in KEYS} == owner


async def test_a_failed_owner_is_retried_on_the_next_replica_of_the_key(tmp_path: Path) -> None:
    policy = make_policy(*_configured(tmp_path).policy_for("m"))
    assert isinstance(policy, RendezvousAffinity)
    router, counters, _ = make_router(policy=policy)
    router.update_endpoints([Ep("a"), Ep("b"), Ep("c")])
    first = (await call(router, routing_key="user-7")).instance_id
    SCRIPT[first] = [unavailable()]
    policy.seen.clear()
    retried = (await call(router, routing_key="user-7")).instance_id
    assert retried != first and counters.retries_total == 1
    assert policy.seen == [(1, frozenset()), (2, frozenset({first}))]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"policy": "nearest"},
            "policy='nearest' \\(expected 'p2c', 'round_robin' or 'sticky_test'\\)",
        ),
        (
            {"models": {"m": {"policy": "nearest"}}},
            "models\\['m'\\].policy='nearest' \\(expected 'p2c', 'round_robin' or",
        ),
        (
            {"policy": STICKY, "policy_options": {"ring": 64}},
            "policy_options: policy 'sticky_test': unknown option 'ring' "
            "\\(expected one of \\['fallback'\\]\\)",
        ),
        (
            {"models": {"m": {"policy": STICKY, "policy_options": {"fallback": STICKY}}}},
            "models\\['m'\\].policy_options: fallback='sticky_test'",
        ),
        (
            {"policy_options": {"fallback": "p2c"}},
            "policy_options: policy 'p2c': unknown option 'fallback' \\(expected one of \\[\\]\\)",
        ),
        ({"policy_options": ["fallback"]}, "policy_options: expected dict, got list"),
        ({"models": {"m": {"transport": "http"}}}, "models\\['m'\\].transport='http'"),
    ],
)
def test_unknown_policies_and_options_are_config_errors(values: dict, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        datapath_config_from_mapping(values)


def test_registering_a_taken_name_is_refused_and_unknown_names_list_the_table() -> None:
    register_policy(STICKY, RendezvousAffinity)  # the same class again: a no-op
    with pytest.raises(InvalidInputError, match="picker policy 'p2c' is built-in"):
        register_policy("p2c", RendezvousAffinity)
    with pytest.raises(InvalidInputError, match="expected 'p2c', 'round_robin' or 'sticky_test'"):
        make_policy("nearest")
    with pytest.raises(ValueError, match="policy_options"):
        DataPathConfig(models={"m": ModelPathConfig(policy_options={"depth": 2})})
