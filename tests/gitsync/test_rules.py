"""The sidecar's pure decisions."""

from __future__ import annotations

import random

import pytest

from flipt_operator.gitsync.flipt_view import FliptView
from flipt_operator.rules.gitsync import (
    redact_url,
    retry_delay,
    scrub,
    settled_push,
    storage_ready,
)

A, B, C = "a" * 40, "b" * 40, "c" * 40


def test_settled_push_is_decided_by_upstreams_ref_read_again() -> None:
    assert settled_push(B, B) is None  # upstream holds what was pushed: it landed
    assert settled_push(None, None) is None  # a deletion that happened
    assert "not pushed" in (settled_push(B, A) or "")  # still at the old value
    assert "absent" in (settled_push(B, None) or "")


def test_flipt_view_tracks_what_flipt_fetched_and_pushed() -> None:
    view = FliptView()
    view.offered({"refs/heads/main": A, "refs/heads/other": C})
    view.fetched([A])
    assert view.refs == {"refs/heads/main": A}  # only what it asked for
    view.offered({"refs/heads/main": A})  # nothing new: it asks for nothing, still at A
    assert view.refs["refs/heads/main"] == A
    view.pushed("refs/heads/main", B)
    view.offered({"refs/heads/main": B})
    assert view.refs["refs/heads/main"] == B


def test_a_push_attempt_without_push_or_retry_is_a_refusal_after_the_grace() -> None:
    view = FliptView(refs={"refs/heads/main": A}, has={A})
    view.push_attempt({"refs/heads/main": B}, now=0)
    assert view.refused(now=1, grace=5) is None
    refused = view.refused(now=6, grace=5)
    assert refused is not None and refused.behind == {"refs/heads/main": (A, B)}
    assert view.refused(now=20, grace=5) is None  # reported once
    # A retry (a new attempt) or a push ends an attempt without a refusal.
    view.push_attempt({"refs/heads/main": B}, now=0)
    view.push_received()
    assert view.refused(now=10, grace=5) is None
    view.push_attempt({"refs/heads/main": A}, now=0)  # Flipt is at upstream's head: nothing to refuse
    assert view.refused(now=10, grace=5) is None


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
