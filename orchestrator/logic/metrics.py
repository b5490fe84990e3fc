"""Prometheus metrics of business-logic stores (process-wide, default registry).

``store`` is one of sqlite, postgres, redis, npz, http; ``plan`` the plan whose step used it.
"""

from __future__ import annotations

from prometheus_client import Counter

__all__ = ["CACHE_LOOKUPS", "STORE_KEYS", "STORE_QUERIES", "STREAM_MESSAGES"]

STORE_QUERIES = Counter(
    "meshserve_logic_store_queries_total",
    "Backend queries made by lookup steps (one per coalesced batch), by outcome",
    ["store", "plan", "outcome"],
)
STORE_KEYS = Counter(
    "meshserve_logic_store_keys_total", "Keys fetched from backends by lookup steps",
    ["store", "plan"],
)  # fmt: skip
CACHE_LOOKUPS = Counter(
    "meshserve_logic_cache_lookups_total",
    "Feature-store keys served from the orchestrator's TTL cache (hit) or the backend (miss)",
    ["store", "plan", "result"],
)
STREAM_MESSAGES = Counter(
    "meshserve_feedback_stream_messages_total",
    "Feedback stream messages by outcome (applied, duplicate, dead_lettered, retried)",
    ["subject", "outcome"],
)
