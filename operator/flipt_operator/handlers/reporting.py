"""Writing status the same way on every kind: validate through the model, patch only what
changed (an unchanged reconcile writes nothing), and post one Event per state change."""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ..builders.status import ConditionSpec, Summary, merge_conditions, merge_patch, now_utc, transitions
from ..clients.kube import Kube
from ..models.kinds import KindInfo
from .events import RECORDER
from .metrics import API_WRITES

log = logging.getLogger(__name__)

_locks: defaultdict[tuple[str, str, str], threading.Lock] = defaultdict(threading.Lock)
_locks_guard = threading.Lock()


@contextmanager
def object_lock(kind: KindInfo, namespace: str, name: str) -> Iterator[None]:
    """One reconcile per object at a time: kopf's handler and a cross-kind trigger may race."""
    with _locks_guard:
        lock = _locks[(kind.kind, namespace, name)]
    with lock:
        yield


def write_status(
    kube: Kube,
    kind: KindInfo,
    body: dict[str, Any],
    *,
    summary: Summary,
    domain: list[ConditionSpec] = (),  # type: ignore[assignment]
    managed: tuple[str, ...] = (),
    fields: dict[str, Any] | None = None,
    stored: Callable[[dict[str, Any]], Any] | None = None,
) -> bool:
    """Make body's status say this; True when anything was written (and then `stored` is
    given the object as the API returned it: caches stay current before the watch says so)."""
    old = body.get("status") or {}
    meta = body["metadata"]
    generation = meta.get("generation")
    conditions = merge_conditions(
        old.get("conditions"),
        [*domain, *summary.conditions()],
        generation=generation,
        now=now_utc(),
        managed=managed,
    )
    wanted = {"observedGeneration": generation, "conditions": conditions, **(fields or {})}
    # The model is the schema: anything it would not keep, the API server would prune.
    new = kind.status.model_validate(wanted).to_api()
    patch = merge_patch(old, new)
    if patch is None:
        return False
    written = kube.patch_status(kind, meta["namespace"], meta["name"], patch)
    if stored is not None:
        stored({**written, "kind": kind.kind})
    API_WRITES.labels(kind.kind, "patch-status").inc()
    involved = {**body, "apiVersion": body.get("apiVersion"), "kind": kind.kind}
    for change in transitions(old.get("conditions"), new["conditions"]):
        RECORDER.record(kube, involved, warning=change.warning, reason=change.reason, message=change.message)
    return True
