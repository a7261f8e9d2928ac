"""Prometheus metrics of the sidecar, in a registry of its own (one per process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class SyncMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.syncs = Counter(
            "flipt_git_sync_syncs_total",
            "Polls of upstream by storage and result (success, fetch_error, timeout, error).",
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
            "Duration of Flipt's pushes forwarded to the remote.",
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
            "1 while a refused write of Flipt's is reported (until a later write lands).",
            ["storage"],
            registry=self.registry,
        )
        self.conflicts = Counter(
            "flipt_git_sync_conflicts_total",
            "Writes of Flipt's refused because upstream had moved.",
            ["storage"],
            registry=self.registry,
        )
        self.pushes = Counter(
            "flipt_git_sync_pushes_total",
            "Ref updates Flipt pushed, by whether upstream accepted them (accepted, refused).",
            ["storage", "result"],
            registry=self.registry,
        )
        self.behind = Gauge(
            "flipt_git_sync_behind_commits", "Upstream commits this pod's Flipt has not fetched.", ["storage"],
            registry=self.registry,
        )
        self.ready = Gauge(
            "flipt_git_sync_ready", "1 when Flipt can be served from the storage.", ["storage"], registry=self.registry
        )
