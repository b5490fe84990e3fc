"""The one catalogue of meshserve's Prometheus metrics: names, label names, help, type, buckets.

Every process builds its metrics from these specs (``meshserve.telemetry.metrics.build``), and
the dashboard (``deploy/grafana/build_dashboard.py``) and the alerting/recording rules
(``deploy/prometheus/rules.yml``, checked by tests/unit/test_telemetry_rules.py) write their
PromQL with the same names, so a query can never ask for a metric or a label nobody exports.

To add a metric: add a ``MetricSpec`` below (in the block of the process that exports it, label
names from the ``L_*`` constants), build it where it is measured (``build(SPEC)`` for the
default registry, ``build(SPEC, registry=...)`` for a per-replica one), and use ``SPEC.name`` /
``SPEC.series("_bucket")`` in dashboards and rules. Naming follows Prometheus conventions (see
``check_metric_names``): prefix ``meshserve_``, base units in the name, ``_total`` on counters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["ALL", "LATENCY_BUCKETS_S", "ROW_BUCKETS", "MetricSpec"]

Kind = Literal["counter", "gauge", "histogram"]

# Label names (every label any meshserve metric carries).
L_PLAN = "plan"
L_STEP = "step"
L_BRANCH = "branch"
L_OUTCOME = "outcome"  # "ok", "error" (plans) or a lower-case gRPC code (model calls)
L_MODEL = "model"
L_METHOD = "method"
L_CODE = "code"  # a gRPC status code name (OK, RESOURCE_EXHAUSTED, ...)
L_ENDPOINT = "endpoint"
L_REASON = "reason"
L_CANDIDATE = "candidate"
L_LEARNER = "learner"
L_ARM = "arm"
# Labels Prometheus adds from Consul discovery (deploy/prometheus/prometheus.yml relabelling).
L_INSTANCE = "instance"
L_SERVICE = "service"
L_ROLE = "role"
L_SURFACE = "surface"  # "grpc" or "http"

LATENCY_BUCKETS_S = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass(frozen=True)
class MetricSpec:
    """One metric family. `name` is the exposed name (counters end in ``_total``)."""

    name: str
    help: str
    kind: Kind
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()

    def series(self, suffix: str = "") -> str:
        """The name of one of its series (``_bucket``, ``_sum``, ``_count`` for histograms)."""
        if suffix and self.kind != "histogram":
            raise ValueError(f"{self.name}: only histograms have {suffix!r} series")
        return self.name + suffix


def _counter(name: str, help: str, *labels: str) -> MetricSpec:
    return MetricSpec(name, help, "counter", labels)


def _gauge(name: str, help: str, *labels: str) -> MetricSpec:
    return MetricSpec(name, help, "gauge", labels)


def _histogram(name: str, help: str, buckets: tuple[float, ...], *labels: str) -> MetricSpec:
    return MetricSpec(name, help, "histogram", labels, buckets)


# ----- every process ----------------------------------------------------------------------
BUILD_INFO = _gauge(
    "meshserve_build_info",
    "meshserve process identity",
    "service", "version", "instance_id", "meshserve_version",
)  # fmt: skip

# ----- orchestrator: plans and steps (orchestrator/metrics.py) ----------------------------
PLAN_REQUESTS = _counter(
    "meshserve_plan_requests_total", "Plan executions by outcome", L_PLAN, L_OUTCOME
)
PLAN_LATENCY = _histogram(
    "meshserve_plan_latency_seconds",
    "End-to-end plan execution time in the orchestrator",
    LATENCY_BUCKETS_S,
    L_PLAN,
)
STEP_LATENCY = _histogram(
    "meshserve_step_latency_seconds",
    "Time of one step of a plan, by outcome",
    LATENCY_BUCKETS_S,
    L_PLAN, L_STEP, L_OUTCOME,
)  # fmt: skip
PLAN_DECISIONS = _counter(
    "meshserve_plan_decisions_total",
    "Branches chosen by select/split/bandit steps",
    L_PLAN, L_STEP, L_BRANCH,
)  # fmt: skip

# ----- orchestrator: shadows and canaries (orchestrator/metrics.py) -----------------------
SHADOW_COMPARED_ROWS = _counter(
    "meshserve_shadow_compared_rows_total",
    "Rows compared between primary and candidate",
    L_PLAN, L_STEP, L_CANDIDATE,
)  # fmt: skip
SHADOW_AGREED_ROWS = _counter(
    "meshserve_shadow_agreed_rows_total",
    "Rows where the candidate agreed with the primary (by the step's comparison)",
    L_PLAN, L_STEP, L_CANDIDATE,
)  # fmt: skip
SHADOW_CANDIDATE_ERRORS = _counter(
    "meshserve_shadow_candidate_errors_total",
    "Failed shadow candidate runs",
    L_PLAN, L_STEP, L_CANDIDATE,
)  # fmt: skip
SHADOW_LATENCY = _histogram(
    "meshserve_shadow_latency_seconds",
    "Latency of the primary and of the candidate of a shadow step (branch: primary|candidate)",
    LATENCY_BUCKETS_S,
    L_PLAN, L_STEP, L_CANDIDATE, L_BRANCH,
)  # fmt: skip

# ----- orchestrator: data path to the replicas (orchestrator/datapath/metrics.py) ----------
DATAPATH_CALLS = _counter(
    "meshserve_datapath_calls_total", "Model calls made by the orchestrator", L_MODEL, L_OUTCOME
)
DATAPATH_ATTEMPTS = _counter(
    "meshserve_datapath_attempts_total",
    "Attempts sent to model replicas (first tries and retries)",
    L_MODEL,
)
DATAPATH_RETRIES = _counter(
    "meshserve_datapath_retries_total", "Retried attempts by reason", L_MODEL, L_REASON
)
DATAPATH_HEDGES = _counter(
    "meshserve_datapath_hedges_total", "Hedged attempts sent to a second replica", L_MODEL
)
DATAPATH_EJECTIONS = _counter(
    "meshserve_datapath_ejections_total", "Replicas ejected as outliers", L_MODEL
)
DATAPATH_NO_ENDPOINT = _counter(
    "meshserve_datapath_no_endpoint_failures_total",
    "Calls failed fast because no replica was ready",
    L_MODEL,
)
DATAPATH_RETRY_BUDGET = _gauge(
    "meshserve_datapath_retry_budget_tokens",
    "Retry tokens left in a model's retry budget (0: retries are refused)",
    L_MODEL,
)
DATAPATH_READY_REPLICAS = _gauge(
    "meshserve_datapath_ready_replicas",
    "Replicas of a model the orchestrator may send to (passing, not ejected)",
    L_MODEL,
)
DATAPATH_IN_FLIGHT = _gauge(
    "meshserve_datapath_in_flight", "Requests in flight per endpoint", L_MODEL, L_ENDPOINT
)
DATAPATH_CALL_LATENCY = _histogram(
    "meshserve_datapath_call_latency_seconds",
    "Latency of a model call as the caller sees it (batch wait and retries included)",
    LATENCY_BUCKETS_S,
    L_MODEL,
)
DATAPATH_BATCH_ROWS = _histogram(
    "meshserve_datapath_batch_rows",
    "Rows per client-side micro-batch sent to a replica",
    ROW_BUCKETS,
    L_MODEL,
)
DATAPATH_SERVER_BATCH_ROWS = _histogram(
    "meshserve_datapath_server_batch_rows",
    "Rows of the session call that served a request, as the model reports (stats.batch_size)",
    ROW_BUCKETS,
    L_MODEL,
)

# ----- orchestrator: online learning (orchestrator/learning/) ------------------------------
BANDIT_REWARDS = _counter(
    "meshserve_bandit_rewards_total",
    "Rewards this orchestrator applied, per bandit arm (per-user bandits count under their arm)",
    L_PLAN, L_STEP, L_ARM,
)  # fmt: skip
BANDIT_REWARD_SUM = _counter(
    "meshserve_bandit_reward_sum_total",
    "Sum of the rewards this orchestrator applied, per arm (rate / rewards rate = mean reward)",
    L_PLAN, L_STEP, L_ARM,
)  # fmt: skip
FEEDBACK_OUTCOMES = _counter(
    "meshserve_feedback_total",
    "Feedback per step: applied now, or already applied (duplicate)",
    L_OUTCOME,
)
LEARNER_VERSION = _gauge(
    "meshserve_learner_deployed_version",
    "Number of the deployed version (v<N>) of a learner",
    L_LEARNER,
)
LEARNER_HOLDOUT_ACCURACY = _gauge(
    "meshserve_learner_holdout_accuracy",
    "Holdout accuracy of a learner's deployed version",
    L_LEARNER,
)
AUTH_REFUSED = _counter(
    "meshserve_auth_refused_total",
    "Calls refused by authentication (UNAUTHENTICATED) or by a token's plan scope "
    "(PERMISSION_DENIED); surface grpc|http, service admin|data",
    L_SURFACE, L_SERVICE, L_CODE,
)  # fmt: skip

# ----- model replicas (modelsvc/metrics.py, one registry per replica) ----------------------
MODEL_REQUESTS = _counter(
    "meshserve_modelsvc_requests_total",
    "Requests served, by RPC method and gRPC status code",
    L_MODEL, L_METHOD, L_CODE,
)  # fmt: skip
MODEL_LATENCY = _histogram(
    "meshserve_modelsvc_request_duration_seconds",
    "Request latency inside the server, by RPC method and gRPC status code",
    LATENCY_BUCKETS_S,
    L_MODEL, L_METHOD, L_CODE,
)  # fmt: skip
MODEL_BATCH_ROWS = _histogram(
    "meshserve_modelsvc_batch_rows", "Rows per session call", ROW_BUCKETS, L_MODEL
)
MODEL_BATCH_REQUESTS = _histogram(
    "meshserve_modelsvc_batch_requests", "Requests merged into one session call", ROW_BUCKETS,
    L_MODEL,
)  # fmt: skip
MODEL_QUEUE_WAIT = _histogram(
    "meshserve_modelsvc_queue_wait_seconds",
    "Time a request waited in the batch queue",
    LATENCY_BUCKETS_S,
    L_MODEL,
)
MODEL_COMPUTE = _histogram(
    "meshserve_modelsvc_compute_seconds",
    "Duration of one batch (concatenate, handler, session call)",
    LATENCY_BUCKETS_S,
    L_MODEL,
)
MODEL_QUEUE_DEPTH = _gauge(
    "meshserve_modelsvc_queue_depth", "Requests waiting in the batch queue", L_MODEL
)
MODEL_QUEUE_CAPACITY = _gauge(
    "meshserve_modelsvc_queue_capacity",
    "Requests the batch queue holds before it refuses (RESOURCE_EXHAUSTED)",
    L_MODEL,
)

ALL: tuple[MetricSpec, ...] = tuple(
    v for v in dict(globals()).values() if isinstance(v, MetricSpec)
)
"""Every spec above, in definition order."""
