"""Prometheus metrics of the sidecar, in a registry of its own (one per process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class SyncMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.syncs = Counter(
            "flipt_git_sync_syncs_total",
            "Sync cycles by storage and result (success, fetch_error, push_error, conflict, error).",
            ["storage", "result"],
            registry=self.registry,
        )
        self.fetch_duration = Histogram(
            "flipt_git_sync_fetch_duration_seconds",
            "Duration of fetches from the remote.",
            ["storage"],
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.push_duration = Histogram(
            "flipt_git_sync_push_duration_seconds",
            "Duration of pushes to the remote.",
            ["storage"],
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.last_success = Gauge(
            "flipt_git_sync_last_success_timestamp_seconds",
            "Unix time of the last successful fetch.",
            ["storage"],
            registry=self.registry,
        )
        self.conflict = Gauge(
            "flipt_git_sync_conflict",
            "1 while the storage has an unresolved conflict.",
            ["storage"],
            registry=self.registry,
        )
        self.conflicts = Counter(
            "flipt_git_sync_conflicts_total",
            "Conflicts detected (each new conflict once).",
            ["storage"],
            registry=self.registry,
        )
        self.ahead = Gauge(
            "flipt_git_sync_ahead_commits", "Local commits not on the remote.", ["storage"], registry=self.registry
        )
        self.behind = Gauge(
            "flipt_git_sync_behind_commits", "Remote commits not published.", ["storage"], registry=self.registry
        )
        self.ready = Gauge(
            "flipt_git_sync_ready", "1 when Flipt can be served from the storage.", ["storage"], registry=self.registry
        )
