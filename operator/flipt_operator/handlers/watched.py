"""The Flipt objects of the watched namespaces, as the watches (and the operator's own writes)
last delivered them, with the references between them indexed.

A pass reads its environments, storages and credentials from here instead of LISTing the
namespace, and a trigger asks here which servers it concerns (an environment's server, the
servers of a storage's environments, the storages of a credential). Until a namespace has been
listed once by a full pass (`primed`), the watches may not have delivered all of it yet, so its
passes are full ones: the API's LIST is then loaded here. Newer resourceVersions win, and a
deleted object is remembered by the version of its deletion, so a LIST taken before a deletion
cannot bring the object back.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..models.environment import FliptEnvironmentSpec
from ..models.kinds import CREDENTIAL, ENVIRONMENT, STORAGE

DEFAULT_SERVER = str(FliptEnvironmentSpec.model_fields["server"].default)
KINDS = (ENVIRONMENT.kind, STORAGE.kind, CREDENTIAL.kind)


def _version(body: dict[str, Any]) -> int:
    try:
        return int((body.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:  # not etcd's integers: compare nothing, the latest delivery wins
        return 0


def environment_server(body: Mapping[str, Any] | None) -> str | None:
    """The server an environment names (the model's default when unset), from the raw spec: an
    environment whose spec does not validate still belongs to a server's pass (its status says why)."""
    if body is None:
        return None
    server = (body.get("spec") or {}).get("server")
    return server if isinstance(server, str) and server else DEFAULT_SERVER


def environment_storage(body: Mapping[str, Any] | None) -> str | None:
    storage = ((body or {}).get("spec") or {}).get("storage")
    return storage if isinstance(storage, str) and storage else None


def storage_credential(body: Mapping[str, Any] | None) -> str | None:
    name = ((((body or {}).get("spec") or {}).get("git") or {}).get("credentialRef") or {}).get("name")
    return name if isinstance(name, str) and name else None


class _Index:
    """key -> names, kept from each object's current key."""

    def __init__(self) -> None:
        self._names: dict[str, set[str]] = defaultdict(set)

    def move(self, name: str, old: str | None, new: str | None) -> None:
        if old == new:
            return
        if old is not None:
            self._names[old].discard(name)
            if not self._names[old]:
                del self._names[old]
        if new is not None:
            self._names[new].add(name)

    def get(self, key: str) -> set[str]:
        return set(self._names.get(key, ()))


class _Namespace:
    def __init__(self) -> None:
        self.objects: dict[str, dict[str, dict[str, Any]]] = {kind: {} for kind in KINDS}
        self.deleted: dict[tuple[str, str], int] = {}  # (kind, name) -> resourceVersion of its deletion
        self.environments_by_server = _Index()
        self.environments_by_storage = _Index()
        self.storages_by_credential = _Index()
        self.primed = False


def _slim(body: dict[str, Any]) -> dict[str, Any]:
    """What a pass reads of an object: managedFields are most of its size and never read."""
    meta = {k: v for k, v in (body.get("metadata") or {}).items() if k != "managedFields"}
    return {**body, "metadata": meta}


@dataclass(frozen=True)
class Observed:
    """What a watch event says. `before`: the object as cached before it. `relisted`: the event
    belongs to a re-listing: kopf lists a resource again when its watch could not resume (410
    Gone, as after an API server restart), and an object deleted meanwhile is simply absent from
    it, so only a full pass finds what it leaves behind. `known`: the cache held this very version
    already (loaded by a full pass's LIST, or our own write): nothing a pass has not seen."""

    before: dict[str, Any] | None
    relisted: bool
    known: bool


class WatchedObjects:
    def __init__(self) -> None:
        self._namespaces: dict[str, _Namespace] = defaultdict(_Namespace)
        self._delivered: set[tuple[str, str, str]] = set()  # objects a watch has delivered
        self._guard = threading.Lock()

    # -- feeding ---------------------------------------------------------------------------

    def observe(self, event: Any) -> Observed:
        """A watch event of one of our kinds: stored, and what it says (`Observed`)."""
        body = event.get("object") or {}
        meta = body.get("metadata") or {}
        key = (body.get("kind", ""), meta.get("namespace", ""), meta.get("name", ""))
        with self._guard:
            relisted = event.get("type") is None and key in self._delivered
            if event.get("type") == "DELETED":
                self._delivered.discard(key)
            else:
                self._delivered.add(key)
        if event.get("type") == "DELETED":
            return Observed(self._remove(body), relisted, False)
        before = self.store(body)
        known = before is not None and bool(_version(body)) and _version(before) == _version(body)
        return Observed(before, relisted, known)

    def store_own_write(self, body: dict[str, Any]) -> None:
        """The response to our own status write. Stored only when its spec is the one cached (the
        same generation): a spec the watch has not delivered yet would hide from the trigger
        that comes with it what the object was before (the server an environment left)."""
        meta = body.get("metadata") or {}
        known = self.get(body.get("kind", ""), meta.get("namespace", ""), meta.get("name", ""))
        if known is not None and known["metadata"].get("generation") == meta.get("generation"):
            self.store(body)

    def store(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """An object as the API returned it (a watch event, a LIST item, a write's response),
        unless a newer version is known. Returns the previous object."""
        meta = body.get("metadata") or {}
        kind, namespace, name = body.get("kind", ""), meta.get("namespace", ""), meta.get("name", "")
        if kind not in KINDS:
            return None
        version = _version(body)
        with self._guard:
            ns = self._namespaces[namespace]
            known = ns.objects[kind].get(name)
            if known is not None and version and _version(known) > version:
                return known
            if known is None and version and ns.deleted.get((kind, name), 0) >= version:
                return None
            ns.deleted.pop((kind, name), None)
            ns.objects[kind][name] = _slim(body)
            self._reindex(ns, kind, name, known, body)
            return known

    def _remove(self, body: dict[str, Any]) -> dict[str, Any] | None:
        meta = body.get("metadata") or {}
        kind, namespace, name = body.get("kind", ""), meta.get("namespace", ""), meta.get("name", "")
        if kind not in KINDS:
            return None
        with self._guard:
            ns = self._namespaces[namespace]
            known = ns.objects[kind].pop(name, None)
            ns.deleted[(kind, name)] = max(_version(body), ns.deleted.get((kind, name), 0))
            self._reindex(ns, kind, name, known, None)
            return known

    def load(self, namespace: str, kind: str, items: Iterable[dict[str, Any]]) -> None:
        """A LIST of the whole namespace (a full pass): what it lacks and the watch has not
        delivered since is gone; what it holds is stored unless a newer version is known."""
        items = [{**item, "kind": kind} for item in items]  # LIST items carry no kind
        listed = {item["metadata"]["name"] for item in items}
        for item in items:
            self.store(item)
        with self._guard:
            ns = self._namespaces[namespace]
            newest = max((_version(i) for i in items), default=0)
            for name, known in list(ns.objects[kind].items()):
                if name not in listed and _version(known) <= newest:
                    del ns.objects[kind][name]
                    self._reindex(ns, kind, name, known, None)

    def mark_primed(self, namespace: str) -> None:
        with self._guard:
            self._namespaces[namespace].primed = True

    @staticmethod
    def _reindex(ns: _Namespace, kind: str, name: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        if kind == ENVIRONMENT.kind:
            ns.environments_by_server.move(name, environment_server(old), environment_server(new))
            ns.environments_by_storage.move(name, environment_storage(old), environment_storage(new))
        elif kind == STORAGE.kind:
            ns.storages_by_credential.move(name, storage_credential(old), storage_credential(new))

    # -- reading ---------------------------------------------------------------------------

    def primed(self, namespace: str) -> bool:
        with self._guard:
            ns = self._namespaces.get(namespace)
            return ns is not None and ns.primed

    def namespaces(self) -> list[str]:
        with self._guard:
            return sorted(self._namespaces)

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self._guard:
            ns = self._namespaces.get(namespace)
            return ns.objects[kind].get(name) if ns is not None else None

    def of_kind(self, kind: str, namespace: str, names: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """The objects of `kind` (those of `names` that exist, when given), sorted by name."""
        with self._guard:
            ns = self._namespaces.get(namespace)
            if ns is None:
                return []
            objects = ns.objects[kind]
            wanted = sorted(objects) if names is None else sorted(set(names) & set(objects))
            return [objects[name] for name in wanted]

    def environments_of_servers(self, namespace: str, servers: Iterable[str]) -> set[str]:
        with self._guard:
            ns = self._namespaces.get(namespace)
            return set().union(*(ns.environments_by_server.get(s) for s in servers)) if ns else set()

    def environments_of_storages(self, namespace: str, storages: Iterable[str]) -> set[str]:
        with self._guard:
            ns = self._namespaces.get(namespace)
            return set().union(*(ns.environments_by_storage.get(s) for s in storages)) if ns else set()

    def storages_of_credentials(self, namespace: str, credentials: Iterable[str]) -> set[str]:
        with self._guard:
            ns = self._namespaces.get(namespace)
            return set().union(*(ns.storages_by_credential.get(c) for c in credentials)) if ns else set()

    def storages_with(self, namespace: str, key: str) -> set[str]:
        """Storages whose spec has `key` (git, database) set."""
        with self._guard:
            ns = self._namespaces.get(namespace)
            if ns is None:
                return set()
            return {name for name, body in ns.objects[STORAGE.kind].items() if (body.get("spec") or {}).get(key)}


SecretKeyNames = tuple[list[str], str]  # (key names, resourceVersion): never a value


class SecretKeys:
    """The key names and resourceVersion of the Secrets a pass has needed, as the Secret watch
    and the passes' own reads last saw them (never their values): a scoped pass reads a Secret
    from the API only when it is not here. Newer resourceVersions win, and a deletion leaves a
    tombstone, so a read that started before a deletion cannot bring the Secret back. A Secret
    is followed from its first read on (`follows`), whether or not something still names it."""

    def __init__(self) -> None:
        self._known: dict[tuple[str, str], tuple[SecretKeyNames | None, int]] = {}  # None: deleted
        self._guard = threading.Lock()

    def follows(self, namespace: str, name: str) -> bool:
        with self._guard:
            return (namespace, name) in self._known

    def observe(self, event: Mapping[str, Any]) -> None:
        """A watch event (or listing) of a Secret: keep its key names, or its deletion."""
        body = event.get("object") or {}
        meta = body.get("metadata") or {}
        entry = None if event.get("type") == "DELETED" else (
            sorted((body.get("data") or {}).keys()), str(meta.get("resourceVersion", "")))
        self._put(meta.get("namespace", ""), meta.get("name", ""), entry, _version(body))

    def store(self, namespace: str, found: Mapping[str, SecretKeyNames]) -> None:
        """What a pass read from the API (Secrets it did not find are simply not stored)."""
        for name, (keys, version) in found.items():
            self._put(namespace, name, (keys, version), _version({"metadata": {"resourceVersion": version}}))

    def _put(self, namespace: str, name: str, entry: SecretKeyNames | None, version: int) -> None:
        with self._guard:
            known = self._known.get((namespace, name))
            if known is None or version == 0 or version >= known[1]:
                self._known[(namespace, name)] = (entry, version)

    def lookup(self, namespace: str, names: Iterable[str]) -> tuple[dict[str, SecretKeyNames], set[str]]:
        """(what is known of `names`, the names to read from the API). A deleted Secret is read
        again: recreated, its watch event may not have arrived yet."""
        hits: dict[str, SecretKeyNames] = {}
        misses: set[str] = set()
        with self._guard:
            for name in names:
                known = self._known.get((namespace, name))
                if known is not None and known[0] is not None:
                    hits[name] = known[0]
                else:
                    misses.add(name)
        return hits, misses
