"""Prometheus metrics of the operator (served by `flipt-operator run --metrics-port`)."""

from prometheus_client import Counter, Gauge, Histogram

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
PASSES_OVERDUE = Counter(
    "flipt_operator_passes_overdue_total", "Namespace passes that ran longer than the pass deadline."
)
OLDEST_PASS_SECONDS = Gauge(
    "flipt_operator_oldest_pass_seconds", "How long the longest-running namespace pass has run (0: none runs)."
)
PASS_SERVERS = Counter(
    "flipt_operator_pass_servers_total",
    "Servers planned by namespace passes: by full passes (start, periodic resync) and scoped ones (a change).",
    ["pass"],
)
PASSES_IN_PROGRESS = Gauge(
    "flipt_operator_passes_in_progress",
    "Passes admitted and not finished: running, or queued for a pass worker (a request folding into a waiting pass adds none).",
)
WATCH_EVENTS = Counter(
    "flipt_operator_watch_events_total",
    "Secret and ConfigMap events by whether they asked for a pass (pass) or concern no Flipt object "
    "(ignored); counted once decided (the pass asked for has run or is folded into the one running).",
    ["kind", "decision"],
)
