"""The watch-fed cache a scoped pass reads, and how a trigger's scope widens to what it affects.
Pure Python (events are the dicts kopf delivers), so tested directly."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from flipt_operator.handlers.servers import Scope, widen
from flipt_operator.handlers.watched import SecretKeys, WatchedObjects


def _obj(kind: str, name: str, version: int, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"kind": kind, "metadata": {"namespace": "ns", "name": name, "resourceVersion": str(version),
                                       "managedFields": [{"manager": "x"}]}, "spec": spec or {}}


def _env(name: str, version: int, server: str | None = None, storage: str | None = None) -> dict[str, Any]:
    spec = {k: v for k, v in (("server", server), ("storage", storage)) if v}
    return _obj("FliptEnvironment", name, version, spec)


def _event(body: dict[str, Any], type_: str | None = "MODIFIED") -> dict[str, Any]:
    return {"type": type_, "object": body}


def test_an_older_version_never_replaces_a_newer_one_and_managed_fields_are_not_kept():
    objects = WatchedObjects()
    objects.observe(_event(_env("a", 5, server="s1")))
    assert objects.store(_env("a", 4, server="s0"))["metadata"]["resourceVersion"] == "5"  # stale write response
    kept = objects.get("FliptEnvironment", "ns", "a")
    assert kept["spec"]["server"] == "s1" and "managedFields" not in kept["metadata"]
    assert objects.environments_of_servers("ns", ["s1"]) == {"a"}
    assert objects.environments_of_servers("ns", ["s0"]) == set()


def test_a_listing_taken_before_a_deletion_does_not_bring_the_object_back():
    objects = WatchedObjects()
    objects.observe(_event(_env("a", 5, server="s1")))
    objects.observe(_event(_env("a", 7, server="s1"), "DELETED"))
    objects.load("ns", "FliptEnvironment", [_env("a", 5, server="s1")])  # the LIST predates the deletion
    assert objects.get("FliptEnvironment", "ns", "a") is None
    assert objects.environments_of_servers("ns", ["s1"]) == set()
    objects.observe(_event(_env("a", 9, server="s1"), "ADDED"))  # created again: newer than the deletion
    assert objects.environments_of_servers("ns", ["s1"]) == {"a"}


def test_a_listing_removes_what_it_no_longer_holds_but_not_what_the_watch_brought_since():
    objects = WatchedObjects()
    objects.observe(_event(_env("old", 3)))
    objects.observe(_event(_env("new", 12)))  # created after the LIST below was taken
    objects.load("ns", "FliptEnvironment", [_env("kept", 10)])
    assert [e["metadata"]["name"] for e in objects.of_kind("FliptEnvironment", "ns")] == ["kept", "new"]
    # The model's default server, for an environment that names none.
    assert objects.environments_of_servers("ns", ["flipt"]) == {"kept", "new"}


def test_an_environment_moving_between_servers_and_storages_is_reindexed():
    objects = WatchedObjects()
    assert objects.observe(_event(_env("a", 1, server="s1", storage="git"))).before is None
    before = objects.observe(_event(_env("a", 2, server="s2", storage="db"))).before
    assert before["spec"] == {"server": "s1", "storage": "git"}
    assert objects.environments_of_servers("ns", ["s1"]) == set()
    assert objects.environments_of_storages("ns", ["db"]) == {"a"}
    assert objects.environments_of_storages("ns", ["git"]) == set()


def test_a_listing_of_an_object_a_watch_delivered_before_is_a_relisting():
    objects = WatchedObjects()
    assert not objects.observe(_event(_env("a", 1), None)).relisted  # the listing at start
    assert not objects.observe(_event(_env("a", 2))).relisted
    assert objects.observe(_event(_env("a", 2), None)).relisted  # listed again: the watch had a gap
    objects.observe(_event(_env("a", 3), "DELETED"))
    assert not objects.observe(_event(_env("a", 4), None)).relisted  # a new object of the same name


def test_a_version_the_cache_holds_already_is_known():
    objects = WatchedObjects()
    objects.load("ns", "FliptEnvironment", [_env("a", 5)])  # a full pass's LIST
    assert objects.observe(_event(_env("a", 5), None)).known  # the listing at start: seen by that pass
    assert not objects.observe(_event(_env("a", 6))).known


def test_our_status_write_is_cached_only_over_the_same_spec():
    objects = WatchedObjects()
    env = _env("a", 5, server="s1")
    env["metadata"]["generation"] = 1
    objects.observe(_event(env))
    written = _env("a", 6, server="s1")
    written["metadata"]["generation"], written["status"] = 1, {"phase": "x"}
    objects.store_own_write(written)
    assert objects.get("FliptEnvironment", "ns", "a")["status"] == {"phase": "x"}
    # The response carries a spec the watch has not delivered (moved to s2): not cached, so the
    # watch event still finds s1 as where it was before.
    ahead = _env("a", 8, server="s2")
    ahead["metadata"]["generation"] = 2
    objects.store_own_write(ahead)
    update = _env("a", 7, server="s2")
    update["metadata"]["generation"] = 2
    assert objects.observe(_event(update)).before["spec"]["server"] == "s1"


def _namespace() -> SimpleNamespace:
    """s1 and s2 share storage `shared`; s2 also uses `own`, read with credential `c`; s3 stands apart."""
    objects = WatchedObjects()
    for body in (
        _env("e1", 1, server="s1", storage="shared"),
        _env("e2", 2, server="s2", storage="shared"),
        _env("e2b", 3, server="s2", storage="own"),
        _env("e3", 4, server="s3", storage="alone"),
        _obj("FliptStorage", "own", 5, {"git": {"remote": "r", "credentialRef": {"name": "c"}}}),
        _obj("FliptStorage", "alone", 6, {"git": {"remote": "r"}}),
    ):
        objects.observe(_event(body))
    return SimpleNamespace(objects=objects)


def test_a_scope_widens_to_every_server_sharing_a_storage_with_it():
    ctx = _namespace()
    assert widen(ctx, "ns", Scope.of(servers=["s1"])) == ({"s1", "s2"}, {"shared", "own"})
    assert widen(ctx, "ns", Scope.of(credentials=["c"])) == ({"s1", "s2"}, {"shared", "own"})
    assert widen(ctx, "ns", Scope.of(storages=["alone"])) == ({"s3"}, {"alone"})
    # A storage nobody uses (or that does not exist) concerns no server, only its own status.
    assert widen(ctx, "ns", Scope.of(storages=["unused"])) == (set(), {"unused"})


def _secret(name: str, version: int, keys: tuple[str, ...]) -> dict[str, Any]:
    return {"kind": "Secret", "metadata": {"namespace": "ns", "name": name, "resourceVersion": str(version)},
            "data": {k: "c2VjcmV0" for k in keys}}


def test_secret_key_names_follow_the_watch_and_a_stale_read_never_wins():
    secrets = SecretKeys()
    assert secrets.lookup("ns", ["s"]) == ({}, {"s"}) and not secrets.follows("ns", "s")
    secrets.store("ns", {"s": (["token"], "5")})  # a pass read it: followed from now on
    assert secrets.follows("ns", "s") and secrets.lookup("ns", ["s"]) == ({"s": (["token"], "5")}, set())
    secrets.observe(_event(_secret("s", 7, ("password", "username"))))  # rotated
    secrets.store("ns", {"s": (["token"], "6")})  # a read that started before the rotation
    assert secrets.lookup("ns", ["s"])[0] == {"s": (["password", "username"], "7")}
    secrets.observe(_event(_secret("s", 8, ("password",)), "DELETED"))
    secrets.store("ns", {"s": (["password"], "7")})  # a read from before the deletion
    assert secrets.lookup("ns", ["s"]) == ({}, {"s"})  # read again: it may have been recreated
    secrets.observe(_event(_secret("s", 9, ("token",)), None))  # recreated, seen in a listing
    assert secrets.lookup("ns", ["s"])[0] == {"s": (["token"], "9")}
    assert "c2VjcmV0" not in repr(secrets._known)  # key names and versions only, never a value
