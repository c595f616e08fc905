"""The operator's own Prometheus metrics, named as controller-runtime names them, so
dashboards made for Go controllers read them unchanged."""

import prometheus_client

CONTROLLER = "batmodel"
METRICS_PATH = "/metrics"

RECONCILE_TOTAL = prometheus_client.Counter(
    "controller_runtime_reconcile_total",
    "Reconcile passes per controller and result (success, error, requeue, requeue_after).",
    ["controller", "result"],
)
RECONCILE_ERRORS = prometheus_client.Counter(
    "controller_runtime_reconcile_errors_total",
    "Reconcile passes that ended in an error.",
    ["controller"],
)
RECONCILE_TIME = prometheus_client.Histogram(
    "controller_runtime_reconcile_time_seconds",
    "Duration of a reconcile pass.",
    ["controller"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
WORKQUEUE_DEPTH = prometheus_client.Gauge(
    "workqueue_depth", "Models woken and waiting for a reconcile pass.", ["name"]
)
WORKQUEUE_ADDS = prometheus_client.Counter(
    "workqueue_adds_total", "Wake-ups of a model's reconcile.", ["name"]
)
REST_REQUESTS = prometheus_client.Counter(
    "rest_client_requests_total",
    "Requests to the Kubernetes API server by status code, method and host.",
    ["code", "method", "host"],
)
CACHE_OBJECTS = prometheus_client.Gauge(
    "batcomputer_operator_cache_objects", "Objects in the operator's watch cache.", ["kind"]
)
LEADER = prometheus_client.Gauge(
    "leader_election_master_status",
    "1 while this replica holds the leader Lease, else 0.",
    ["name"],
)


def serve(port: int) -> None:
    """Serve every metric on `port` at /metrics, from a daemon thread."""
    prometheus_client.start_http_server(port)
