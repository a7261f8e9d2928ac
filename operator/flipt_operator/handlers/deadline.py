"""How long the running namespace passes have taken, against a deadline.

Every call a pass makes is bounded (API requests, SQL and Redis checks), so a pass that runs far
longer than its calls can is stuck: a thread that never returns keeps its pass "running" for
good, and every later request that overlaps it folds into the pass waiting behind it. Nothing inside the
process can end a stuck thread; the liveness probe fails instead, and the kubelet restarts the
operator. Until then the overdue pass is logged and counted.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from .metrics import OLDEST_PASS_SECONDS, PASSES_OVERDUE

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_PASS_DEADLINE = float(os.environ.get("FLIPT_OPERATOR_PASS_DEADLINE_SECONDS", "300"))


class PassClock:
    """The start time of each running pass (passes of one namespace may run side by side)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._guard = threading.Lock()
        self._started: dict[int, tuple[str, float]] = {}  # pass -> (namespace, start)
        self._reported: set[int] = set()  # overdue passes already logged and counted
        self._passes = itertools.count()

    def time(self, namespace: str, work: Callable[..., T], *args: Any) -> T:
        """Run one pass of `namespace`, recording when it started."""
        with self._guard:
            token = next(self._passes)
            self._started[token] = (namespace, self._clock())
        try:
            return work(*args)
        finally:
            with self._guard:
                _, started = self._started.pop(token)
                late = token in self._reported
                self._reported.discard(token)
            if late:
                log.warning("pass over %s ended after %.0fs, past the deadline", namespace, self._clock() - started)

    def oldest(self) -> float:
        """Seconds the longest-running pass has run so far (0 when none runs)."""
        with self._guard:
            starts = [start for _, start in self._started.values()]
        return self._clock() - min(starts) if starts else 0.0

    def overdue(self, deadline: float) -> dict[str, float]:
        """Namespace -> seconds of its longest pass, for passes running longer than `deadline`.
        Each pass is logged and counted once, when first seen here."""
        now = self._clock()
        late: dict[str, float] = {}
        with self._guard:
            new = []
            for token, (namespace, start) in self._started.items():
                if now - start > deadline:
                    late[namespace] = max(late.get(namespace, 0.0), now - start)
                    if token not in self._reported:
                        self._reported.add(token)
                        new.append((namespace, now - start))
        for namespace, seconds in sorted(new):
            PASSES_OVERDUE.inc()
            log.error("pass over %s has run for %.0fs, longer than the %.0fs deadline: a call may hang; "
                      "the liveness probe fails until it ends", namespace, seconds, deadline)
        return late


PASS_CLOCK = PassClock()
OLDEST_PASS_SECONDS.set_function(PASS_CLOCK.oldest)
