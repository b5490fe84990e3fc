"""SessionKeeper and the LeaderElection state machine on a fake clock and fake Consul sessions
(no sleeps: each test drives `SessionKeeper.step()` and moves the clock by the delay it asks)."""

from __future__ import annotations

import random
from collections import deque

import pytest

from meshserve.errors import MeshError, NotFoundError
from meshserve.registry import ConsulConfig, LeaderElection, LeaderState
from meshserve.registry.errors import RegistryUnavailableError
from meshserve.registry.kv import KVEntry
from meshserve.registry.session import SessionEvent, SessionKeeper

TTL_S = 10.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeSessions:
    """Scripted Consul: each call pops its next outcome (an exception to raise or a value)."""

    def __init__(self) -> None:
        self.renewals: deque[BaseException | None] = deque()
        self.lookups: deque[BaseException | bool] = deque()
        self.creations: deque[BaseException | str] = deque()
        self.calls: list[str] = []

    async def create(self) -> str:
        self.calls.append("create")
        outcome = self.creations.popleft()
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def renew(self, session_id: str) -> None:
        self.calls.append(f"renew {session_id}")
        outcome = self.renewals.popleft() if self.renewals else None
        if outcome is not None:
            raise outcome

    async def exists(self, session_id: str) -> bool:
        self.calls.append(f"exists {session_id}")
        outcome = self.lookups.popleft()
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def no_leader() -> MeshError:
    return RegistryUnavailableError("Consul failed renew session: 500 No cluster leader")


def not_found() -> MeshError:
    return NotFoundError("Consul found nothing for renew session: 404 Session id not found")


def keeper(ops: FakeSessions, clock: Clock, events: list[tuple[SessionEvent, str]]):
    return SessionKeeper(
        ops,
        TTL_S,
        name="lock 'k'",
        on_event=lambda event, sid: events.append((event, sid)),
        clock=clock,
        rng=random.Random(7),
    )


async def advance(keeper_: SessionKeeper, clock: Clock) -> float:
    delay = await keeper_.step()
    clock.now += delay
    return delay


async def test_transient_renewal_failures_are_retried_with_jittered_backoff_within_the_ttl():
    ops, clock, events = FakeSessions(), Clock(), []
    k = keeper(ops, clock, events)
    ops.creations.append("s1")
    assert await k.ensure() == "s1"
    assert await advance(k, clock) == pytest.approx(TTL_S / 2)  # nothing due yet
    last_good = clock.now
    ops.renewals.extend([no_leader(), ConnectionRefused(), no_leader(), None])
    delays = [await advance(k, clock) for _ in range(3)]
    assert all(0 < d <= TTL_S / 10 for d in delays)
    assert len(set(delays)) == 3  # jittered
    assert clock.now - last_good < TTL_S  # the retries fit in the TTL
    assert await advance(k, clock) == TTL_S / 2  # renewed: back on schedule
    assert k.session_id == "s1" and k.renewed_at == clock.now - TTL_S / 2
    assert [e for e, _ in events] == [
        SessionEvent.CREATED, *[SessionEvent.FAILED] * 3, SessionEvent.RENEWED,
    ]  # fmt: skip


class ConnectionRefused(RegistryUnavailableError):
    def __init__(self) -> None:
        super().__init__("Consul unreachable for renew session: Connection refused")


async def test_a_404_during_consul_recovery_is_not_believed_until_a_consistent_read_confirms():
    ops, clock, events = FakeSessions(), Clock(), []
    k = keeper(ops, clock, events)
    ops.creations.append("s1")
    await k.ensure()
    clock.now += TTL_S / 2
    # A restarted server answers 404 before it replayed its log, and cannot serve a
    # consistent read yet; then it can, and the session is there after all.
    ops.renewals.extend([not_found(), not_found(), None])
    ops.lookups.extend([RegistryUnavailableError("500 Not ready to serve consistent reads"), True])
    assert 0 < await advance(k, clock) <= TTL_S / 10
    assert 0 < await advance(k, clock) <= TTL_S / 10
    assert await advance(k, clock) == TTL_S / 2
    assert k.session_id == "s1"
    assert "create" not in ops.calls[1:]  # the same session all along
    assert SessionEvent.GONE not in [e for e, _ in events]


async def test_a_session_confirmed_gone_is_replaced_at_once_and_creation_is_retried():
    ops, clock, events = FakeSessions(), Clock(), []
    k = keeper(ops, clock, events)
    ops.creations.extend(["s1", no_leader(), "s2"])
    await k.ensure()
    clock.now += TTL_S / 2
    ops.renewals.append(not_found())
    ops.lookups.append(False)
    assert 0 < await advance(k, clock) <= TTL_S / 10  # gone; the new creation failed
    assert k.session_id == ""
    assert await advance(k, clock) == TTL_S / 2  # retried: created
    assert k.session_id == "s2"
    assert events == [
        (SessionEvent.CREATED, "s1"), (SessionEvent.GONE, "s1"), (SessionEvent.FAILED, ""),
        (SessionEvent.CREATED, "s2"),
    ]  # fmt: skip


async def test_no_session_is_created_before_one_is_wanted():
    ops, clock, events = FakeSessions(), Clock(), []
    k = keeper(ops, clock, events)
    assert await k.step() > 0 and ops.calls == [] and k.forget() == ""


def election_with(ops: FakeSessions, clock: Clock) -> LeaderElection:
    return LeaderElection(
        ConsulConfig(), "k", "me", ttl_s=TTL_S, clock=clock, rng=random.Random(1), sessions=ops
    )


async def test_the_leader_state_machine_recovers_through_a_consul_restart_and_a_lost_session():
    ops, clock = FakeSessions(), Clock()
    election = election_with(ops, clock)
    seen: list[bool] = []
    election.subscribe(seen.append)
    ops.creations.extend(["s1", "s2"])
    keeper_ = election._keeper

    await keeper_.ensure()  # what contending does when it sees the key free
    assert election.state is LeaderState.FOLLOWER and election.session_id == "s1"
    await election._on_key(KVEntry("k", b"me", 42, session="s1"))
    assert election.state is LeaderState.LEADER and election.lock_index == 42

    # Consul restarts: renewals fail for a while, leadership holds within the TTL.
    clock.now += TTL_S / 2
    ops.renewals.extend([no_leader(), not_found(), None])
    ops.lookups.append(RegistryUnavailableError("500 Not ready to serve consistent reads"))
    await advance(keeper_, clock)
    assert election.state is LeaderState.RECOVERING and election.is_leader
    await advance(keeper_, clock)
    assert election.state is LeaderState.RECOVERING
    await advance(keeper_, clock)
    assert election.state is LeaderState.LEADER and election.session_id == "s1"

    # Renewals fail for longer than the TTL: no longer leader, still recovering.
    ops.renewals.extend([no_leader()] * 40)
    while clock.now - election.renewed_at < TTL_S:
        await advance(keeper_, clock)
    assert election.state is LeaderState.RECOVERING and not election.is_leader

    # Consul comes back without the session: lost, a new session, leader again with it.
    ops.renewals.clear()
    ops.renewals.append(not_found())
    ops.lookups.append(False)
    await advance(keeper_, clock)
    assert election.session_id == "s2" and election.state is LeaderState.FOLLOWER
    await election._on_key(KVEntry("k", b"me", 57, session="s2"))
    assert election.state is LeaderState.LEADER and election.is_leader
    assert election.lock_index == 57
    assert seen == [True, False, True]
    assert dict(election.transitions) == {
        ("follower", "leader"): 2, ("leader", "recovering"): 2, ("recovering", "leader"): 1,
        ("recovering", "lost"): 1, ("lost", "follower"): 1,
    }  # fmt: skip
