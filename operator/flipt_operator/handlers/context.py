"""What the operator's handlers share: settings, the sidecars' latest reports, the peering
check, change fingerprints and retry backoff. The namespace pass lives in servers.py."""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..clients.kube import APPLIED_HASH_ANNOTATION, Kube, api_error_text
from ..models.plan import OperatorDefaults
from ..models.sync import StorageSyncState
from ..rules.peering import yields_to_a_peer
from .watched import SecretKeys, WatchedObjects

log = logging.getLogger(__name__)
# Namespace passes running at once over all namespaces (each also writes through `pool`).
PASS_WORKERS = int(os.environ.get("FLIPT_OPERATOR_PASS_WORKERS", "4"))
CHECK_WORKERS = int(os.environ.get("FLIPT_OPERATOR_CHECK_WORKERS", "4"))


def operator_defaults(native_sidecar: bool) -> OperatorDefaults:
    kwargs: dict[str, Any] = {"sidecar_image": os.environ.get("FLIPT_OPERATOR_IMAGE", "flipt-operator:0.1.0"),
                              "native_sidecar": native_sidecar}
    if os.environ.get("FLIPT_V1_IMAGE"):
        kwargs["v1_image"] = os.environ["FLIPT_V1_IMAGE"]
    if os.environ.get("FLIPT_V2_IMAGE"):
        kwargs["v2_image"] = os.environ["FLIPT_V2_IMAGE"]
    return OperatorDefaults(**kwargs)


@dataclass
class SyncReports:
    """The latest /status of every sidecar, by (namespace, storage): [(pod, state)]."""

    by_storage: dict[tuple[str, str], list[tuple[str, StorageSyncState]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    polled: set[str] = field(default_factory=set)  # namespaces read at least once since start

    def for_storage(self, namespace: str, name: str) -> list[tuple[str, StorageSyncState]] | None:
        """The reports, or None when the namespace's sidecars have not been read yet."""
        with self.lock:
            if namespace not in self.polled:
                return None
            return list(self.by_storage.get((namespace, name), []))

    def replace_namespace(self, namespace: str,
                          reports: dict[str, list[tuple[str, StorageSyncState]]]) -> set[str] | None:
        """Store a namespace's reports. Returns the storages whose reports changed, or None on the
        namespace's first read (every storage's reports went from unknown to known)."""
        with self.lock:
            old = {k[1]: v for k, v in self.by_storage.items() if k[0] == namespace}
            first = namespace not in self.polled
            self.polled.add(namespace)
            for key in [k for k in self.by_storage if k[0] == namespace]:
                del self.by_storage[key]
            for storage, items in reports.items():
                self.by_storage[(namespace, storage)] = items
            if first:
                return None
            return {s for s in set(old) | set(reports) if old.get(s) != reports.get(s)}


@dataclass(frozen=True)
class Peering:
    name: str
    identity: str
    priority: int
    clusterwide: bool

    def paused(self, kube: Kube, namespace: str) -> bool:
        try:
            status = kube.peering_status(self.name, None if self.clusterwide else namespace)
        except Exception as exc:  # noqa: BLE001 - unknown: act, as kopf would keep running too
            log.debug("peering status unreadable: %s", api_error_text(exc))
            return False
        return yields_to_a_peer(status, self.identity, self.priority, datetime.now(UTC))


class Fingerprints:
    """Last seen (generation, labels, annotations[, status]) per object: our own writes come back
    as watch events (a status write on our kinds, a child the pass applied), and a pass for each
    would only read and find nothing to do."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str, str], Any] = {}
        self._own_writes: dict[tuple[str, str, str], str] = {}  # key -> the applied hash being written
        self._guard = threading.Lock()

    @staticmethod
    def _key_and_fingerprint(kind: str, body: Any) -> tuple[tuple[str, str, str], tuple[Any, ...]]:
        meta = body.get("metadata") or {}
        fingerprint: tuple[Any, ...] = (meta.get("generation"), meta.get("deletionTimestamp"),
                                        repr(meta.get("labels")), repr(meta.get("annotations")))
        if kind in ("Deployment", "Job"):
            fingerprint += (repr(body.get("status")),)  # their controllers report through status
        return (kind, meta.get("namespace", ""), meta.get("name", "")), fingerprint

    def changed(self, event: Any) -> bool:
        body = event.get("object") or {}
        key, fingerprint = self._key_and_fingerprint(body.get("kind", ""), body)
        if event.get("type") == "DELETED":
            with self._guard:
                self._seen.pop(key, None)
            return True
        applied = ((body.get("metadata") or {}).get("annotations") or {}).get(APPLIED_HASH_ANNOTATION)
        with self._guard:
            previous = self._seen.get(key)
            self._seen[key] = fingerprint
            if previous == fingerprint:
                return False
            if applied is not None and self._own_writes.get(key) == applied and previous is not None \
                    and previous[-1] == fingerprint[-1]:
                # Our own apply coming back (it can arrive before the apply's response): the same
                # status as before, and the hash we wrote. A controller's report differs in status.
                del self._own_writes[key]
                return False
            return True

    def expect_own_write(self, kind: str, namespace: str, name: str, applied_hash: str | None) -> None:
        """Before the pass applies a child: its watch event, carrying `applied_hash`, is no news.
        None clears it (nothing was written)."""
        with self._guard:
            if applied_hash is None:
                self._own_writes.pop((kind, namespace, name), None)
            else:
                self._own_writes[(kind, namespace, name)] = applied_hash


class ListedVersions:
    """kopf delivers a resource's listing as events of type None: at start, and again whenever a
    watch cannot resume (410 Gone, as after every API server restart, whose watch cache starts
    afresh). Handlers that skip the listing at start (the resumed objects cover it) must not
    skip what changed while the watch was down: that arrives only in a re-listing.

    `changed` is True for every watch event, and for a listed object whose resourceVersion
    differs from the last one seen, or that was never seen and was created after this process
    started (so it appeared during a gap; the listing at start only holds older objects)."""

    def __init__(self, started: datetime | None = None) -> None:
        # creationTimestamp has whole seconds: compare with the start's second, not after it.
        self.started = (started or datetime.now(UTC)).replace(microsecond=0)
        self._versions: dict[tuple[str, str, str], str | None] = {}
        self._guard = threading.Lock()

    def changed(self, event: Any) -> bool:
        body = event.get("object") or {}
        meta = body.get("metadata") or {}
        key = (body.get("kind", ""), meta.get("namespace", ""), meta.get("name", ""))
        version = meta.get("resourceVersion")
        with self._guard:
            if event.get("type") == "DELETED":
                self._versions.pop(key, None)
                return True
            seen = key in self._versions
            previous = self._versions.get(key)
            self._versions[key] = version
        if event.get("type") is not None:
            return True
        if seen:
            missed = previous != version
        else:
            try:
                created = datetime.fromisoformat(str(meta.get("creationTimestamp")).replace("Z", "+00:00"))
            except ValueError:
                return False
            missed = created >= self.started
        if missed:
            log.info("%s %s/%s changed while its watch was down: acting on the re-listing", *key)
        return missed


class Backoff:
    """Per-key exponential backoff: 1 s, 2 s, 4 s ... capped at 60 s; reset by a success."""

    def __init__(self, first: float = 1.0, cap: float = 60.0) -> None:
        self.first, self.cap = first, cap
        self._failures: dict[str, int] = {}
        self._guard = threading.Lock()

    def failed(self, key: str) -> float:
        with self._guard:
            count = self._failures[key] = self._failures.get(key, 0) + 1
        return min(self.cap, self.first * 2 ** (count - 1))

    def succeeded(self, key: str) -> None:
        with self._guard:
            self._failures.pop(key, None)


class Retries:
    """At most one pending retry per key (a namespace pass, a credential check). Scheduling a key
    that is already pending keeps the earlier of the two times, so a burst of failures starts one
    timer, not a chain per failure. `skip` is asked when the time comes: a replica that kopf's
    peering has paused leaves the work to the active one (which has its own retries)."""

    def __init__(self, skip: Any = lambda key: False) -> None:
        self.skip = skip
        self._pending: dict[str, tuple[float, threading.Timer]] = {}
        self._guard = threading.Lock()

    def schedule(self, key: str, delay: float, work: Any, *args: Any) -> bool:
        """Run `work(*args)` in `delay` seconds; False when an earlier retry of `key` is pending."""
        due = time.monotonic() + delay
        with self._guard:
            pending = self._pending.get(key)
            if pending is not None and pending[0] <= due:
                return False
            if pending is not None:
                pending[1].cancel()
            timer = threading.Timer(delay, self._fire, (key, work, args))
            timer.daemon = True
            self._pending[key] = (due, timer)
        timer.start()
        return True

    def pending(self) -> list[str]:
        with self._guard:
            return sorted(self._pending)

    def _fire(self, key: str, work: Any, args: tuple[Any, ...]) -> None:
        with self._guard:
            self._pending.pop(key, None)
        if self.skip(key):
            log.info("retry of %s skipped: this replica stands by for a peer", key)
            return
        work(*args)


class KeyedWork:
    """Work per key on a bounded pool of threads, at most one queued per key: asking again while
    it waits adds nothing (it has not started, so it will see the change); asking while it runs
    queues one more. Handlers hand work here and return, so kopf's handler threads (and the
    bodies of the events queued for them) are not held by API calls."""

    def __init__(self, workers: int, name: str) -> None:
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix=name)
        self._queued: set[str] = set()
        self._guard = threading.Lock()

    def submit(self, key: str, work: Any, *args: Any) -> bool:
        """False when the same key already waits (or the pool is shut down)."""
        with self._guard:
            if key in self._queued:
                return False
            self._queued.add(key)
        try:
            self._pool.submit(self._run, key, work, args)
        except RuntimeError:  # shut down: the operator is stopping
            with self._guard:
                self._queued.discard(key)
            return False
        return True

    def _run(self, key: str, work: Any, args: tuple[Any, ...]) -> None:
        with self._guard:
            self._queued.discard(key)  # from here on, a new request queues another run
        try:
            work(*args)
        except Exception:  # the work handles its failures; this would be a defect, and must be seen
            log.exception("work for %s failed", key)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


@dataclass
class Context:
    kube: Kube
    defaults: OperatorDefaults
    reports: SyncReports = field(default_factory=SyncReports)
    git_namespaces: set[str] = field(default_factory=set)  # where the sync poller looks
    database_namespaces: set[str] = field(default_factory=set)  # re-checked periodically
    # The passes themselves, off kopf's handler threads: at most PASS_WORKERS at once, over
    # all namespaces (a pass admitted while all are busy queues here, holding its lane).
    passes: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(PASS_WORKERS, thread_name_prefix="namespace-pass"))
    # Credential checks (a GET of the credential and its Secret, a status write), off kopf's
    # threads and apart from the passes, which wait for them.
    checks: KeyedWork = field(default_factory=lambda: KeyedWork(CHECK_WORKERS, "credential-check"))
    # Writes of one pass run side by side (servers are independent; so are statuses).
    pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(8, thread_name_prefix="pass"))
    backoff: Backoff = field(default_factory=lambda: Backoff())  # how long Retries waits, per key
    seen: Fingerprints = field(default_factory=lambda: Fingerprints())
    listed: ListedVersions = field(default_factory=lambda: ListedVersions())
    objects: WatchedObjects = field(default_factory=lambda: WatchedObjects())  # what the passes read
    secrets: SecretKeys = field(default_factory=lambda: SecretKeys())  # key names the passes read
    peering: Peering | None = None  # set when several replicas take turns
    # keys are "<namespace>" or "<namespace>/<name>": the namespace decides the standby check
    retries: Retries = field(init=False)

    def __post_init__(self) -> None:
        self.retries = Retries(skip=lambda key: self.standby(key.split("/", 1)[0]))

    def standby(self, namespace: str) -> bool:
        """Whether kopf has paused this replica for a peer: background work then waits."""
        return self.peering is not None and self.peering.paused(self.kube, namespace)

    def changed(self, event: Any) -> bool:
        """Whether a watch event says something a pass would read (not our own status write)."""
        return self.seen.changed(event)
