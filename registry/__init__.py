"""meshserve.registry: everything that talks to Consul.

Registration (reconciled), health-filtered discovery by blocking queries, the catalog, KV with
check-and-set and chunked values, and leader election on session locks. See docs/CONTRACTS.md.
"""

from meshserve.registry.blocking import BlockingOptions
from meshserve.registry.config import ConsulConfig
from meshserve.registry.discovery import Endpoint, EndpointWatcher, list_services
from meshserve.registry.errors import CheckAndSetError, KVIntegrityError, RegistryUnavailableError
from meshserve.registry.kv import KV, KVEntry
from meshserve.registry.leader import LeaderElection, LeaderOptions, LeaderState
from meshserve.registry.registration import ReconcileOptions, Registration, ServiceInstance

__all__ = [
    "KV",
    "BlockingOptions",
    "CheckAndSetError",
    "ConsulConfig",
    "Endpoint",
    "EndpointWatcher",
    "KVEntry",
    "KVIntegrityError",
    "LeaderElection",
    "LeaderOptions",
    "LeaderState",
    "ReconcileOptions",
    "Registration",
    "RegistryUnavailableError",
    "ServiceInstance",
    "list_services",
]
