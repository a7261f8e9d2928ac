"""FliptStorage status from sidecar reports: per replica when they disagree, fetch policy."""

from datetime import UTC, datetime

from flipt_operator.builders.status_decisions import storage_status
from flipt_operator.models.storage import FliptStorageSpec
from flipt_operator.models.sync import ConflictInfo, StorageSyncState

T = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
A, B = "a" * 40, "b" * 40


def spec(policy="strict"):
    return FliptStorageSpec.model_validate({"git": {"remote": "https://git.example.com/f.git", "fetchPolicy": policy}})


def state(revision, remote=None, error=None, conflict=None, degraded=False, ready=True):
    return StorageSyncState(storage="flags", remote="https://git.example.com/f.git", branch="main",
                            fetch_policy="strict", revision=revision, remote_revision=remote or revision,
                            last_fetch_time=T, last_error=error, degraded=degraded, conflict=conflict, ready=ready)


def conditions(decision):
    return {c.type: c for c in decision.domain}


def test_replicas_that_agree_are_summarised_once():
    d = storage_status("flags", spec(), [], [], ["flipt"], None, [("pod-1", state(A)), ("pod-2", state(A))])
    assert d.fields["sync"]["revision"] == A
    assert not d.fields["sync"].get("replicas")
    assert conditions(d)["Synced"].status is True and d.summary.phase == "ready"


def test_replicas_that_disagree_are_listed_and_not_synced():
    d = storage_status("flags", spec(), [], [], ["flipt"], None,
                       [("pod-2", state(A, remote=B)), ("pod-1", state(B))])
    sync = d.fields["sync"]
    assert "revision" not in sync  # no single revision is served
    assert [r["pod"] for r in sync["replicas"]] == ["pod-1", "pod-2"]
    assert {r["pod"]: r["revision"] for r in sync["replicas"]} == {"pod-1": B, "pod-2": A}
    assert conditions(d)["Synced"].status is False and conditions(d)["Synced"].reason == "Behind"


def test_fetch_errors_follow_the_policy():
    # The sidecar applies the policy: strict -> not ready, lenient -> degraded.
    strict_state = [("pod-1", state(A, error="connection refused", ready=False))]
    strict = storage_status("flags", spec("strict"), [], [], ["flipt"], None, strict_state)
    assert strict.summary.phase == "retrying" and strict.summary.reason == "FetchFailed"
    failing = [("pod-1", state(A, error="connection refused", degraded=True))]
    lenient = storage_status("flags", spec("lenient"), [], [], ["flipt"], None, failing)
    assert lenient.summary.phase == "ready" and lenient.summary.reason == "Degraded"
    assert "connection refused" in lenient.summary.message


def test_conflict_names_files_and_revisions():
    c = ConflictInfo(files=["prod/default/features.yaml"], local_revision=A, remote_revision=B, detected_at=T)
    d = storage_status("flags", spec(), [], [], ["flipt"], None, [("pod-1", state(A, remote=B, conflict=c))])
    cond = conditions(d)["Conflict"]
    assert cond.status is True and "prod/default/features.yaml" in cond.message
    assert d.fields["sync"]["conflict"]["localRevision"] == A
    assert d.summary.phase == "ready" and d.summary.reason == "Conflict"


def test_a_conflict_reported_in_last_error_is_not_a_fetch_failure():
    # The sidecar keeps the conflict's explanation in lastError while fetches succeed.
    c = ConflictInfo(files=["f.yaml"], local_revision=A, remote_revision=B, detected_at=T)
    reports = [("pod-1", state(A, remote=B, conflict=c, error="local commits change f.yaml"))]
    d = storage_status("flags", spec("strict"), [], [], ["flipt"], None, reports)
    assert d.summary.phase == "ready" and d.summary.reason == "Conflict"
    assert conditions(d)["Synced"].reason == "Conflict"


def test_before_the_first_poll_the_last_reported_state_is_kept():
    previous = {"sync": {"revision": A}, "conditions": [
        {"type": "Ready", "status": "True", "reason": "Synced", "message": "Serving."},
        {"type": "Synced", "status": "True", "reason": "Synced", "message": "ok"}]}
    d = storage_status("flags", spec(), [], [], ["flipt"], None, None, previous=previous)
    assert d.fields["sync"] == {"revision": A}
    assert d.summary.reason == "Synced" and conditions(d)["Synced"].status is True


def test_what_each_replicas_flipt_fetched_and_the_last_push_are_reported():
    pushed = datetime(2026, 11, 21, 12, 5, tzinfo=UTC)
    one = state(B).model_copy(update={"flipt_revision": B, "last_push_time": pushed})
    two = state(B).model_copy(update={"flipt_revision": A, "last_push_time": T})
    d = storage_status("flags", spec(), [], [], ["flipt"], None, [("pod-1", one), ("pod-2", two)])
    sync = d.fields["sync"]
    assert sync["revision"] == B and "fliptRevision" not in sync  # the Flipts disagree
    assert {r["pod"]: r["fliptRevision"] for r in sync["replicas"]} == {"pod-1": B, "pod-2": A}
    assert sync["lastPushTime"] == pushed.isoformat().replace("+00:00", "Z")
    agreed = storage_status("flags", spec(), [], [], ["flipt"], None, [("pod-1", one)])
    assert agreed.fields["sync"]["fliptRevision"] == B
