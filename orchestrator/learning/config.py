"""Settings of the learning hub (read where the orchestrator starts it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from meshserve.orchestrator.learning.personal import PersonalConfig
from meshserve.orchestrator.learning.store import PREFIX
from meshserve.orchestrator.learning.tokens import TokenConfig

__all__ = ["HubConfig"]


@dataclass(frozen=True)
class HubConfig:
    """`retention_s`: feedback is accepted (and applied exactly once) this long after the
    request; `max_pending_requests`: decisions kept in memory for token-less feedback;
    `refresh_interval_s`: how often persisted state is reloaded; `cas_attempts`: writes tried
    per step under contention; `prune_interval_s`: how often the leader deletes old markers;
    `tokens`: feedback token bounds (its retention is `retention_s`)."""

    retention_s: float = 3600.0
    max_pending_requests: int = 100_000
    refresh_interval_s: float = 2.0
    kv_prefix: str = PREFIX
    cas_attempts: int = 32
    prune_interval_s: float = 300.0
    tokens: TokenConfig = field(default_factory=TokenConfig)
    personal: PersonalConfig = field(default_factory=PersonalConfig)

    @property
    def applied_prefix(self) -> str:
        """Where the "applied" markers live (beside, not under, the state that is reloaded)."""
        return self.kv_prefix.rstrip("/") + "-applied/"

    @property
    def personal_prefix(self) -> str:
        """Where per-user bandit documents live (never reloaded in bulk: read per user)."""
        return self.kv_prefix.rstrip("/") + "-personal/"

    @property
    def key_path(self) -> str:
        """The shared feedback key when none is configured (protect it with Consul ACLs)."""
        return self.kv_prefix + "secrets/feedback-key"
