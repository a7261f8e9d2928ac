"""The sidecar's pure decisions."""

from __future__ import annotations

import random

import pytest

from flipt_operator.rules.gitsync import (
    SyncAction,
    SyncFacts,
    conflicting_files,
    redact_url,
    retry_delay,
    scrub,
    storage_ready,
)

L, R, B = "l" * 40, "r" * 40, "b" * 40


@pytest.mark.parametrize(
    ("facts", "action"),
    [
        (SyncFacts(local=None, remote=R, base=None), SyncAction.FOLLOW_REMOTE),
        (SyncFacts(local=R, remote=R, base=B), SyncAction.NOTHING),
        (SyncFacts(local=L, remote=R, base=L, local_in_remote=True, local_in_base=True), SyncAction.FOLLOW_REMOTE),
        (SyncFacts(local=L, remote=R, base=R, remote_in_local=True), SyncAction.PUSH_LOCAL),
        (SyncFacts(local=L, remote=R, base=B), SyncAction.CHECK_FILES),
        # force-push: nothing unpushed -> follow; unpushed commits -> conflict, even if pushing would "work"
        (SyncFacts(local=B, remote=R, base=B, base_in_remote=False, local_in_base=True), SyncAction.FOLLOW_REMOTE),
        (SyncFacts(local=L, remote=R, base=B, base_in_remote=False), SyncAction.REWRITTEN_CONFLICT),
        (SyncFacts(local=L, remote=R, base=B, base_in_remote=False, remote_in_local=True), SyncAction.REWRITTEN_CONFLICT),
        # empty remote: the first push creates the branch; a vanished branch is only reported
        (SyncFacts(local=L, remote=None, base=None), SyncAction.PUSH_LOCAL),
        (SyncFacts(local=L, remote=None, base=B), SyncAction.NO_REMOTE_BRANCH),
        (SyncFacts(local=None, remote=None, base=None), SyncAction.NO_REMOTE_BRANCH),
    ],
)
def test_plan_sync(facts: SyncFacts, action: SyncAction) -> None:
    from flipt_operator.rules.gitsync import plan_sync

    assert plan_sync(facts) is action


def test_conflicting_files_is_the_sorted_intersection() -> None:
    assert conflicting_files({"b/features.yaml", "a/features.yaml"}, ["a/features.yaml", "c"]) == ["a/features.yaml"]
    assert conflicting_files({"a"}, {"b"}) == []


def test_retry_delay_doubles_and_is_capped() -> None:
    rng = random.Random(1)
    delays = [retry_delay(30, n, rng) for n in range(8)]
    assert 27 <= delays[0] <= 33
    assert 54 <= delays[1] <= 66
    assert all(d <= 120 * 1.1 for d in delays)
    assert max(retry_delay(600, n, rng) for n in range(5)) <= 600 * 1.1  # never below one interval
    assert retry_delay(0.2, 10, rng) <= 0.8 * 1.1


def test_scrub_removes_userinfo_and_secret_values() -> None:
    text = "fetch https://bob:hunter2@git.example.com/x.git failed: token tok-123 rejected"
    cleaned = scrub(text, ["tok-123", None, b"hunter2", ""])
    assert "hunter2" not in cleaned and "tok-123" not in cleaned and "bob" not in cleaned
    assert "https://git.example.com/x.git" in cleaned
    assert redact_url("ssh://git@host:22/r.git") == "ssh://host:22/r.git"
    assert redact_url("git@github.com:o/r.git") == "git@github.com:o/r.git"  # scp form has no secret


@pytest.mark.parametrize(
    ("policy", "served", "failed", "ready"),
    [
        ("strict", False, False, False),
        ("strict", True, False, True),
        ("strict", True, True, False),
        ("lenient", True, True, True),
        ("lenient", False, True, False),
    ],
)
def test_storage_ready(policy: str, served: bool, failed: bool, ready: bool) -> None:
    assert storage_ready(policy, served, failed) is ready
