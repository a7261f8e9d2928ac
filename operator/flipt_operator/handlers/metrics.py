"""Prometheus metrics of the operator (served by `flipt-operator run --metrics-port`)."""

from prometheus_client import Counter, Histogram

RECONCILES = Counter(
    "flipt_operator_reconciles_total", "Reconciles by kind and outcome.", ["kind", "outcome"]
)
RECONCILE_SECONDS = Histogram(
    "flipt_operator_reconcile_duration_seconds", "Time spent in one reconcile.", ["kind"]
)
API_WRITES = Counter(
    "flipt_operator_api_writes_total", "Writes the operator made to the API server.", ["kind", "verb"]
)
EVENTS = Counter("flipt_operator_events_total", "Events posted.", ["kind", "type", "reason"])
EVENTS_DROPPED = Counter(
    "flipt_operator_events_dropped_total", "Events not posted: past the per-object rate limit.", ["kind", "reason"]
)
