"""The small pieces every handler leans on: the per-namespace coalescer, change fingerprints,
retry backoff and the store of sidecar reports. Pure Python, so they are tested directly."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from flipt_operator.handlers.context import Backoff, Fingerprints, KeyedWork, ListedVersions, SyncReports
from flipt_operator.handlers.servers import EVERYTHING, Coalescer, Scope
from flipt_operator.models.sync import StorageSyncState

# -- Coalescer -----------------------------------------------------------------------------------


def test_requests_during_a_pass_fold_into_exactly_one_more_pass():
    coalescer = Coalescer()
    inside, release = threading.Event(), threading.Event()
    passes: list[str] = []

    def work(namespace: str, scope: Scope) -> None:
        passes.append((namespace, scope))
        if len(passes) == 1:  # hold the first pass open while others ask
            inside.set()
            assert release.wait(5)

    first = threading.Thread(target=coalescer.run, args=("ns", Scope.of(servers=["a"]), work))
    first.start()
    assert inside.wait(5)
    for name in "bcdef":  # each returns at once: the pass under way takes them
        coalescer.run("ns", Scope.of(servers=[name], storages=[f"s-{name}"]), work)
    release.set()
    first.join(5)
    # One more pass, over the union of what the folded requests asked for.
    assert passes == [("ns", Scope.of(servers=["a"])),
                      ("ns", Scope.of(servers="bcdef", storages=[f"s-{n}" for n in "bcdef"]))]


def test_a_folded_request_for_everything_makes_the_next_pass_a_full_one():
    assert Scope.of(servers=["a"]) | EVERYTHING == EVERYTHING
    assert Scope.of(servers=["a"]) | Scope.of(credentials=["c"]) == Scope.of(servers=["a"], credentials=["c"])


def test_namespaces_do_not_wait_for_each_other():
    coalescer = Coalescer()
    inside, release = threading.Event(), threading.Event()
    passes: list[str] = []

    def work(namespace: str, scope: Scope) -> None:
        passes.append(namespace)
        if namespace == "slow":
            inside.set()
            assert release.wait(5)

    slow = threading.Thread(target=coalescer.run, args=("slow", EVERYTHING, work))
    slow.start()
    assert inside.wait(5)
    coalescer.run("fast", EVERYTHING, work)  # runs now, on this thread, while "slow" is held
    assert passes == ["slow", "fast"]
    release.set()
    slow.join(5)


def test_a_failing_pass_propagates_and_frees_the_namespace():
    coalescer = Coalescer()

    def broken(namespace: str, scope: Scope) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        coalescer.run("ns", Scope.of(servers=["a"]), broken)
    ran: list[tuple[str, Scope]] = []
    coalescer.run("ns", Scope.of(servers=["b"]), lambda ns, scope: ran.append((ns, scope)))  # not stuck "running"
    assert ran == [("ns", Scope.of(servers=["b"]))]


def _by_servers(scope: Scope) -> frozenset[str]:
    return scope.servers


def test_passes_over_disjoint_claims_run_side_by_side_and_an_overlapping_one_waits_for_both():
    coalescer = Coalescer(lanes=3)
    inside = {name: threading.Event() for name in "ab"}
    release = {name: threading.Event() for name in "ab"}
    passes: list[frozenset[str]] = []

    def work(namespace: str, scope: Scope) -> None:
        passes.append(scope.servers)
        for name in "ab":
            if scope.servers == {name}:
                inside[name].set()
                assert release[name].wait(5)

    held = [threading.Thread(target=coalescer.run, args=("ns", Scope.of(servers=[n]), work, _by_servers))
            for n in "ab"]
    for thread in held:
        thread.start()
    assert inside["a"].wait(5) and inside["b"].wait(5)  # both under way at once
    # Overlaps both running passes: waits. Disjoint from them, but a request waits already: folds
    # into it (a backlog is worked off in large passes, and cannot be starved by new ones).
    assert coalescer.run("ns", Scope.of(servers=["a", "b"]), work, _by_servers) is None
    assert coalescer.run("ns", Scope.of(servers=["d"]), work, _by_servers) is None
    release["a"].set()
    held[0].join(5)
    assert sorted(passes) == [frozenset("a"), frozenset("b")]  # b still runs: the waiting one waits
    release["b"].set()
    held[1].join(5)
    assert passes[-1] == frozenset("abd") and len(passes) == 3  # run by the last to end, once
    coalescer.run("ns", Scope.of(servers=["e"]), work, _by_servers)  # nothing runs or waits: runs here
    assert passes[-1] == frozenset("e")


def test_a_pass_claiming_the_whole_namespace_runs_alone():
    coalescer = Coalescer(lanes=3)
    inside, release = threading.Event(), threading.Event()
    passes: list[Scope] = []

    def claim(scope: Scope) -> frozenset[str] | None:
        return None if scope.everything else scope.servers

    def work(namespace: str, scope: Scope) -> None:
        passes.append(scope)
        if scope == Scope.of(servers=["a"]):
            inside.set()
            assert release.wait(5)

    first = threading.Thread(target=coalescer.run, args=("ns", Scope.of(servers=["a"]), work, claim))
    first.start()
    assert inside.wait(5)
    assert coalescer.run("ns", EVERYTHING, work, claim) is None  # waits for the pass under way
    assert coalescer.run("ns", Scope.of(servers=["z"]), work, claim) is None  # behind the full one
    release.set()
    first.join(5)
    assert passes == [Scope.of(servers=["a"]), EVERYTHING]


def test_with_every_lane_busy_a_disjoint_request_waits_and_takes_the_first_lane_freed():
    coalescer = Coalescer(lanes=1)
    inside, release = threading.Event(), threading.Event()
    passes: list[frozenset[str]] = []

    def work(namespace: str, scope: Scope) -> None:
        passes.append(scope.servers)
        if scope.servers == {"a"}:
            inside.set()
            assert release.wait(5)

    first = threading.Thread(target=coalescer.run, args=("ns", Scope.of(servers=["a"]), work, _by_servers))
    first.start()
    assert inside.wait(5)
    for name in "bc":
        assert coalescer.run("ns", Scope.of(servers=[name]), work, _by_servers) is None
    release.set()
    first.join(5)
    assert passes == [frozenset("a"), frozenset("bc")]


def test_an_admitted_pass_drains_on_another_thread_and_the_requester_returns_at_once():
    coalescer = Coalescer(lanes=1)
    inside, release = threading.Event(), threading.Event()
    passes: list[tuple[frozenset[str], str]] = []

    def work(namespace: str, scope: Scope) -> None:
        passes.append((scope.servers, threading.current_thread().name))
        if scope.servers == {"a"}:
            inside.set()
            assert release.wait(5)

    admitted = coalescer.admit("ns", Scope.of(servers=["a"]), _by_servers)
    assert admitted == (Scope.of(servers=["a"]), frozenset("a"))
    worker = threading.Thread(target=coalescer.drain, args=("ns", admitted, work), name="pass-worker")
    worker.start()
    assert inside.wait(5)
    assert coalescer.admit("ns", Scope.of(servers=["b"]), _by_servers) is None  # folds: the lane is taken
    release.set()
    worker.join(5)
    assert passes == [(frozenset("a"), "pass-worker"), (frozenset("b"), "pass-worker")]
    # A lane given back unused (the executor refused it) leaves the namespace free.
    admitted = coalescer.admit("ns", Scope.of(servers=["c"]), _by_servers)
    assert admitted is not None
    coalescer.release("ns", admitted[1])
    assert coalescer.admit("ns", Scope.of(servers=["d"]), _by_servers) is not None


def test_keyed_work_queues_one_run_per_key_and_one_more_while_it_runs():
    work = KeyedWork(1, "test-check")
    blocker_started, release_blocker = threading.Event(), threading.Event()
    inside, release = threading.Event(), threading.Event()
    runs: list[str] = []

    def hold() -> None:  # occupies the one worker so that the next submissions wait
        blocker_started.set()
        assert release_blocker.wait(5)

    def check(name: str) -> None:
        runs.append(name)
        if len(runs) == 1:
            inside.set()
            assert release.wait(5)

    assert work.submit("blocker", hold) and blocker_started.wait(5)
    assert work.submit("ns/a", check, "a")
    assert not work.submit("ns/a", check, "a")  # waits already: it will see the change
    release_blocker.set()
    assert inside.wait(5)
    assert work.submit("ns/a", check, "a")  # runs now: one more after it
    release.set()
    work._pool.shutdown(wait=True)  # lets what is queued finish (`shutdown` drops it)
    assert runs == ["a", "a"]


# -- Fingerprints ---------------------------------------------------------------------------------


def _event(kind="FliptStorage", generation=1, labels=None, annotations=None, status=None, type_="MODIFIED"):
    return {
        "type": type_,
        "object": {
            "kind": kind,
            "metadata": {"namespace": "ns", "name": "a", "generation": generation, "labels": labels,
                         "annotations": annotations},
            "status": status,
        },
    }


def test_our_own_status_write_is_not_a_change_but_a_spec_change_is():
    seen = Fingerprints()
    assert seen.changed(_event(status={"x": 1}))
    assert not seen.changed(_event(status={"x": 2}))  # status of our kinds: our own write
    assert seen.changed(_event(generation=2))
    assert seen.changed(_event(generation=2, labels={"a": "b"}))
    assert seen.changed(_event(generation=2, labels={"a": "b"}, annotations={"flipt.io/retry-import": "1"}))
    assert not seen.changed(_event(generation=2, labels={"a": "b"}, annotations={"flipt.io/retry-import": "1"}))


def test_deployment_and_job_status_is_a_change():
    seen = Fingerprints()
    assert seen.changed(_event(kind="Deployment", status={"availableReplicas": 0}))
    assert not seen.changed(_event(kind="Deployment", status={"availableReplicas": 0}))
    assert seen.changed(_event(kind="Deployment", status={"availableReplicas": 1}))


def test_a_deleted_object_is_forgotten():
    seen = Fingerprints()
    assert seen.changed(_event())
    assert seen.changed(_event(type_="DELETED"))
    assert seen.changed(_event())  # created again with the same fingerprint: still news


# -- Backoff --------------------------------------------------------------------------------------


def test_backoff_doubles_per_key_up_to_the_cap_and_resets_on_success():
    backoff = Backoff(first=1.0, cap=8.0)
    assert [backoff.failed("a") for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert backoff.failed("b") == 1.0  # keys are independent
    backoff.succeeded("a")
    assert backoff.failed("a") == 1.0


# -- SyncReports ----------------------------------------------------------------------------------


def _state(revision: str) -> StorageSyncState:
    return StorageSyncState(storage="flags", remote="https://git.example.com/f.git", branch="main",
                            fetch_policy="strict", revision=revision)


def test_reports_are_unknown_until_the_namespace_is_read_then_replaced_whole():
    reports = SyncReports()
    assert reports.for_storage("ns", "flags") is None  # not read yet: callers keep what status says
    assert reports.replace_namespace("ns", {"flags": [("pod-a", _state("a" * 40))]}) is None  # first: all news
    assert reports.for_storage("ns", "flags") == [("pod-a", _state("a" * 40))]
    assert reports.for_storage("ns", "other") == []  # read, and no sidecar reports it
    assert reports.replace_namespace("ns", {"flags": [("pod-a", _state("a" * 40))]}) == set()  # same: no news
    assert reports.replace_namespace("ns", {"flags": [("pod-a", _state("a" * 40))],
                                            "other": [("pod-b", _state("b" * 40))]}) == {"other"}
    assert reports.replace_namespace("ns", {"other": [("pod-b", _state("b" * 40))]}) == {"flags"}  # pod-a went
    assert reports.for_storage("ns", "flags") == []


def test_reading_a_namespace_with_no_sidecars_the_first_time_is_news():
    reports = SyncReports()
    assert reports.replace_namespace("ns", {}) is None
    assert reports.for_storage("ns", "flags") == []


# -- Retries --------------------------------------------------------------------------------------


def test_a_key_has_at_most_one_pending_retry_and_the_earlier_time_wins():
    from flipt_operator.handlers.context import Retries

    retries = Retries()
    ran = threading.Event()
    calls: list[str] = []

    def work(tag: str) -> None:
        calls.append(tag)
        ran.set()

    assert retries.schedule("ns", 30.0, work, "late")
    assert retries.schedule("ns", 0.05, work, "early")  # earlier: replaces the pending one
    assert not retries.schedule("ns", 10.0, work, "later")  # later than the pending one: folded
    assert retries.pending() == ["ns"]
    assert ran.wait(5)
    assert calls == ["early"]
    assert retries.pending() == []


def test_a_replica_on_standby_skips_its_retries():
    from flipt_operator.handlers.context import Retries

    asked: list[str] = []
    done = threading.Event()

    def skip(key: str) -> bool:
        asked.append(key)
        done.set()
        return True

    retries = Retries(skip=skip)
    calls: list[str] = []
    retries.schedule("ns/cred", 0.01, calls.append, "x")
    assert done.wait(5)
    assert asked == ["ns/cred"] and calls == []


# -- ListedVersions --------------------------------------------------------------------------------

STARTED = datetime(2026, 1, 1, 12, 0, 0, 500_000, tzinfo=UTC)


def _secret(event_type, name, version, created="2026-01-01T11:00:00Z"):
    return {"type": event_type, "object": {"kind": "Secret", "metadata": {
        "namespace": "ns", "name": name, "resourceVersion": version, "creationTimestamp": created}}}


def test_the_listing_at_start_is_not_a_change_but_every_watch_event_is():
    listed = ListedVersions(STARTED)
    assert not listed.changed(_secret(None, "old", "1"))
    assert listed.changed(_secret("MODIFIED", "old", "2"))
    assert listed.changed(_secret("ADDED", "new", "3", created="2026-01-01T12:00:01Z"))
    assert listed.changed(_secret("DELETED", "new", "3"))


def test_a_relisting_reports_what_changed_or_appeared_while_the_watch_was_down():
    listed = ListedVersions(STARTED)
    assert not listed.changed(_secret(None, "same", "1"))
    assert not listed.changed(_secret(None, "rotated", "2"))
    # The API server restarted; the watch could not resume (410) and kopf listed again.
    assert not listed.changed(_secret(None, "same", "1"))
    assert listed.changed(_secret(None, "rotated", "9"))
    # Created after the start (the same second counts: timestamps have whole seconds).
    assert listed.changed(_secret(None, "appeared", "10", created="2026-01-01T12:00:00Z"))
    assert not listed.changed(_secret(None, "appeared", "10"))  # and only once
    # Deleted and created again while the watch was down: a new version.
    assert listed.changed(_secret("DELETED", "same", "1"))
    assert listed.changed(_secret(None, "same", "12", created="2026-01-01T12:05:00Z"))


def test_a_child_the_pass_wrote_is_no_news_but_its_controller_report_is():
    seen = Fingerprints()
    before = _event(kind="Deployment", generation=2, annotations={"flipt.io/applied-hash": "h1"},
                     status={"observedGeneration": 2})
    assert seen.changed(before)
    seen.expect_own_write("Deployment", "ns", "a", "h2")
    ours = _event(kind="Deployment", generation=3, annotations={"flipt.io/applied-hash": "h2"},
                  status={"observedGeneration": 2})
    assert not seen.changed(ours)  # our own apply coming back, even before its response
    reported = _event(kind="Deployment", generation=3, annotations={"flipt.io/applied-hash": "h2"},
                      status={"observedGeneration": 3})
    assert seen.changed(reported)  # the controller moved on
    edited = _event(kind="Deployment", generation=4, annotations={"flipt.io/applied-hash": "h2"},
                    status={"observedGeneration": 3})
    assert seen.changed(edited)  # someone else's edit: the expectation was used up
