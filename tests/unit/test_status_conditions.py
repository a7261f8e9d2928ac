from datetime import UTC, datetime, timedelta

from flipt_operator.builders.status import (
    ConditionSpec,
    Summary,
    merge_conditions,
    merge_patch,
    transitions,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def by_type(conditions):
    return {c["type"]: c for c in conditions}


def test_ready_summary_sets_only_ready_and_removes_reconciling_and_stalled():
    stalled = merge_conditions([], Summary("stalled", "SecretNotFound", "create it").conditions(), generation=1, now=T0)
    assert set(by_type(stalled)) == {"Ready", "Stalled"}
    ready = merge_conditions(stalled, Summary("ready", "Valid", "ok").conditions(), generation=2, now=T1)
    assert set(by_type(ready)) == {"Ready"}
    assert by_type(ready)["Ready"]["status"] == "True"
    assert by_type(ready)["Ready"]["observedGeneration"] == 2


def test_last_transition_time_changes_only_with_status():
    first = merge_conditions([], [ConditionSpec("Synced", False, "FetchFailed", "a")], generation=1, now=T0)
    same_status = merge_conditions(first, [ConditionSpec("Synced", False, "Other", "b")], generation=1, now=T1)
    assert by_type(same_status)["Synced"]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert by_type(same_status)["Synced"]["reason"] == "Other"
    flipped = merge_conditions(same_status, [ConditionSpec("Synced", True, "Synced", "")], generation=1, now=T1)
    assert by_type(flipped)["Synced"]["lastTransitionTime"] == "2026-01-01T00:05:00Z"


def test_progressing_and_retrying_set_reconciling():
    prog = by_type(merge_conditions([], Summary("progressing", "Waiting", "m").conditions(), generation=1, now=T0))
    assert prog["Reconciling"]["reason"] == "Progressing" and prog["Ready"]["status"] == "False"
    retry = by_type(merge_conditions([], Summary("retrying", "ApiError", "m").conditions(), generation=1, now=T0))
    assert retry["Reconciling"]["reason"] == "ProgressingWithRetry"
    assert "Stalled" not in retry


def test_unmanaged_conditions_survive_and_managed_ones_go():
    existing = merge_conditions(
        [], [ConditionSpec("Conflict", True, "Conflict", ""), ConditionSpec("Synced", True, "Synced", "")],
        generation=1, now=T0,
    )
    after = merge_conditions(existing, [ConditionSpec("Synced", True, "Synced", "")], generation=1, now=T1,
                             managed=("Conflict",))
    assert set(by_type(after)) == {"Synced"}
    kept = merge_conditions(existing, [], generation=1, now=T1)
    assert set(by_type(kept)) == {"Conflict", "Synced"}


def test_unchanged_input_gives_identical_output():
    wanted = [ConditionSpec("CredentialsValid", True, "Valid", "m"), *Summary("ready", "Valid", "m").conditions()]
    a = merge_conditions([], wanted, generation=3, now=T0)
    b = merge_conditions(a, wanted, generation=3, now=T1)
    assert a == b
    assert merge_patch({"conditions": a}, {"conditions": b}) is None


def test_transitions_one_per_changed_condition_without_duplicates():
    old = merge_conditions([], Summary("ready", "Valid", "ok").conditions(), generation=1, now=T0)
    new = merge_conditions(old, Summary("stalled", "MissingKey", "add it").conditions(), generation=1, now=T1)
    changes = transitions(old, new)
    assert [(c.type, c.reason) for c in changes] == [("Ready", "MissingKey")]
    assert changes[0].warning
    assert transitions(new, new) == []
    healed = merge_conditions(new, Summary("ready", "Valid", "ok").conditions(), generation=1, now=T1)
    assert [(c.type, c.warning) for c in transitions(new, healed)] == [("Ready", False)]


def test_events_follow_ready_and_bad_news_not_every_condition():
    # A new object: progress is a Normal Event; its domain conditions' good news is not one.
    first = merge_conditions([], [ConditionSpec("CredentialsValid", True, "Valid", "ok"),
                                  *Summary("progressing", "Waiting", "rolling out").conditions()],
                             generation=1, now=T0)
    assert [(c.type, c.reason, c.warning) for c in transitions(None, first)] == [("Ready", "Waiting", False)]
    ready = merge_conditions(first, [ConditionSpec("CredentialsValid", True, "Valid", "ok"),
                                     *Summary("ready", "Serving", "up").conditions()], generation=1, now=T1)
    assert [(c.type, c.reason, c.warning) for c in transitions(first, ready)] == [("Ready", "Serving", False)]
    # A domain condition turning bad is a Warning of its own when Ready tells something else.
    failing = merge_conditions(ready, [ConditionSpec("Synced", False, "FetchFailed", "host down"),
                                       *Summary("ready", "Degraded", "serving the last revision").conditions()],
                               generation=1, now=T1)
    assert [(c.type, c.reason, c.warning) for c in transitions(ready, failing)] == [
        ("Ready", "Degraded", False), ("Synced", "FetchFailed", True)]
    # Its recovery is Ready's news; a retry is a Warning, progress is not.
    healed = merge_conditions(failing, [ConditionSpec("Synced", True, "Synced", "at head"),
                                        *Summary("ready", "Serving", "up").conditions()], generation=1, now=T1)
    assert [(c.type, c.reason) for c in transitions(failing, healed)] == [("Ready", "Serving")]
    retrying = merge_conditions(healed, Summary("retrying", "ApiError", "503").conditions(), generation=1, now=T1)
    assert [(c.type, c.warning) for c in transitions(healed, retrying)] == [("Ready", True)]
    conflict = merge_conditions(healed, [ConditionSpec("Conflict", True, "Conflict", "a.yaml")], generation=1, now=T1)
    assert [(c.type, c.warning) for c in transitions(healed, conflict)] == [("Conflict", True)]


def test_merge_patch_deletes_removed_keys_and_recurses():
    assert merge_patch({"a": 1, "b": {"c": 1, "d": 2}}, {"b": {"c": 1, "d": 3}}) == {"a": None, "b": {"d": 3}}
    assert merge_patch({"a": [1]}, {"a": [1, 2]}) == {"a": [1, 2]}
    assert merge_patch({}, {}) is None
