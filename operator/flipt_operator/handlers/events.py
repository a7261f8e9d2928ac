"""Events the way Kubernetes' own recorder posts them: a repeat of the same Event on the same
object bumps its `count` and `lastTimestamp` instead of creating another object, and each object
gets a bounded rate of new Events (a token bucket, like client-go's EventSourceObjectSpamFilter),
so a flapping condition cannot flood the namespace. Status keeps every state anyway."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from ..clients.kube import Kube, api_error_text
from .metrics import API_WRITES, EVENTS, EVENTS_DROPPED

log = logging.getLogger(__name__)

# client-go's defaults: a burst of 25 Events per object, then one every 5 minutes.
SPAM_BURST = 25
SPAM_REFILL_SECONDS = 300.0
# How many distinct Events (and objects) are remembered; the least recently used go first.
CACHE_SIZE = 4096


@dataclass
class _Posted:
    name: str
    count: int


@dataclass
class _Bucket:
    tokens: float
    updated: float


class EventRecorder:
    def __init__(self, burst: int = SPAM_BURST, refill_seconds: float = SPAM_REFILL_SECONDS,
                 clock: Any = time.monotonic) -> None:
        self.burst, self.refill_seconds, self.clock = burst, refill_seconds, clock
        self._posted: OrderedDict[tuple[str, ...], _Posted] = OrderedDict()
        self._buckets: OrderedDict[tuple[str, str], _Bucket] = OrderedDict()
        self._guard = threading.Lock()

    def _allow(self, obj: tuple[str, str]) -> bool:
        now = self.clock()
        with self._guard:
            bucket = self._buckets.pop(obj, None) or _Bucket(float(self.burst), now)
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) / self.refill_seconds)
            bucket.updated = now
            allowed = bucket.tokens >= 1.0
            if allowed:
                bucket.tokens -= 1.0
            self._buckets[obj] = bucket
            while len(self._buckets) > CACHE_SIZE:
                self._buckets.popitem(last=False)
        return allowed

    def record(self, kube: Kube, involved: dict[str, Any], *, warning: bool, reason: str, message: str) -> str:
        """Post or bump one Event; returns created|bumped|dropped. Best effort: never raises."""
        meta = involved["metadata"]
        kind = involved.get("kind", "")
        event_type = "Warning" if warning else "Normal"
        key = (meta["namespace"], meta.get("uid") or meta["name"], event_type, reason, message)
        with self._guard:
            posted = self._posted.get(key)
            if posted is not None:
                self._posted.move_to_end(key)
        try:
            if posted is not None:
                try:
                    kube.bump_event(meta["namespace"], posted.name, posted.count + 1)
                    posted.count += 1
                    API_WRITES.labels(kind, "patch-event").inc()
                    return "bumped"
                except Exception as exc:  # noqa: BLE001 - expired or deleted: post a new one
                    log.debug("event %s not bumped (%s); posting anew", posted.name, api_error_text(exc))
            if not self._allow((meta["namespace"], key[1])):
                EVENTS_DROPPED.labels(kind, reason).inc()
                log.debug("event %s for %s/%s dropped: rate limit per object", reason, meta["namespace"], meta["name"])
                return "dropped"
            name = kube.post_event(involved, warning=warning, reason=reason, message=message)
            API_WRITES.labels(kind, "create-event").inc()
            EVENTS.labels(kind, event_type, reason).inc()
            with self._guard:
                self._posted[key] = _Posted(name, 1)
                while len(self._posted) > CACHE_SIZE:
                    self._posted.popitem(last=False)
            return "created"
        except Exception as exc:  # noqa: BLE001 - an event is best effort; status already holds it
            log.warning("could not post event %s for %s/%s: %s", reason, meta["namespace"], meta["name"],
                        api_error_text(exc))
            return "dropped"


RECORDER = EventRecorder()
