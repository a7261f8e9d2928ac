"""metav1.Condition bookkeeping and kstatus summaries, as pure functions.

Rules kept here so every kind behaves the same:
- lastTransitionTime changes only when a condition's status changes;
- every condition carries the generation it was computed from;
- Ready is always present; Reconciling and Stalled exist only while True (kstatus);
- an Event is due when Ready's status or reason changes, and when another condition turns
  bad (a domain condition False, Stalled or Conflict True) with news Ready's Event lacks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
KSTATUS_TYPES = (READY, RECONCILING, STALLED)

Phase = Literal["ready", "progressing", "retrying", "stalled"]


@dataclass(frozen=True)
class ConditionSpec:
    """What a reconcile concluded about one condition type."""

    type: str
    status: bool | None  # None: Unknown
    reason: str
    message: str = ""

    @property
    def status_text(self) -> str:
        return "Unknown" if self.status is None else ("True" if self.status else "False")


@dataclass(frozen=True)
class Summary:
    """The kstatus outcome of a reconcile."""

    phase: Phase
    reason: str
    message: str

    def conditions(self) -> list[ConditionSpec]:
        if self.phase == "ready":
            return [ConditionSpec(READY, True, self.reason, self.message)]
        if self.phase == "stalled":
            return [
                ConditionSpec(READY, False, self.reason, self.message),
                ConditionSpec(STALLED, True, self.reason, self.message),
            ]
        # progressing: work under way; retrying: a transient failure that will be retried.
        reconciling_reason = "ProgressingWithRetry" if self.phase == "retrying" else "Progressing"
        return [
            ConditionSpec(READY, False, self.reason, self.message),
            ConditionSpec(RECONCILING, True, reconciling_reason, self.message),
        ]


def now_utc() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_conditions(
    existing: list[dict[str, Any]] | None,
    wanted: list[ConditionSpec],
    *,
    generation: int | None,
    now: datetime,
    managed: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """The new conditions list.

    `wanted` sets conditions; a type listed in `managed` (and the kstatus types) but not in
    `wanted` is removed. Conditions of other types are left as they were.
    """
    by_type = {c["type"]: c for c in (existing or [])}
    wanted_types = {w.type for w in wanted}
    removable = set(managed) | {RECONCILING, STALLED}
    result: dict[str, dict[str, Any]] = {
        t: c for t, c in by_type.items() if t in wanted_types or t not in removable
    }
    for w in wanted:
        old = by_type.get(w.type)
        changed = old is None or old.get("status") != w.status_text
        cond = {
            "type": w.type,
            "status": w.status_text,
            "reason": w.reason,
            # kube-apiserver 1.20 reads an empty string in a merge patch as null and refuses it.
            "message": w.message or w.reason,
            "lastTransitionTime": _timestamp(now) if changed or old is None else old["lastTransitionTime"],
        }
        if generation is not None:
            cond["observedGeneration"] = generation
        result[w.type] = cond
    # Stable order: Ready first, then the rest by type, so unchanged input gives unchanged output.
    return sorted(result.values(), key=lambda c: (c["type"] != READY, c["type"]))


@dataclass(frozen=True)
class Transition:
    type: str
    status: str
    reason: str
    message: str
    warning: bool


def _bad(condition: dict[str, Any]) -> bool:
    """Whether a condition's state is a failure a person may need to see."""
    if condition["status"] == "Unknown":
        return False
    bad_when_true = condition["type"] in (STALLED, "Conflict")
    return bool(condition["status"] == "True") == bad_when_true


def transitions(old: list[dict[str, Any]] | None, new: list[dict[str, Any]]) -> list[Transition]:
    """The Events a status change is worth: one when Ready's status or reason changes (a Warning
    when it is False for any reason but progress), and one when another condition changes into
    a bad state, unless Ready's Event already says the same. Recoveries and other good news of
    domain conditions are Ready's to tell (it turns True or changes reason); Reconciling is
    noise. Status keeps every condition anyway."""
    before = {c["type"]: c for c in (old or [])}
    now = {c["type"]: c for c in new}
    progressing = now.get(RECONCILING, {}).get("reason") == "Progressing"
    seen: set[tuple[str, str]] = set()
    out = []
    for c in new:
        prev = before.get(c["type"])
        if c["type"] == RECONCILING or (prev and prev["status"] == c["status"] and prev["reason"] == c["reason"]):
            continue
        if c["type"] == READY:
            warning = c["status"] == "False" and not progressing
        elif _bad(c):
            warning = True
        else:
            continue
        key = (c["reason"], c["message"])
        if key in seen:  # Stalled repeats Ready's reason and message
            continue
        seen.add(key)
        out.append(Transition(c["type"], c["status"], c["reason"], c["message"], warning))
    return out


def merge_patch(old: Any, new: Any) -> Any:
    """An RFC 7386 merge patch turning dict `old` into dict `new` (None when they are equal)."""
    patch: dict[str, Any] = {key: None for key in old.keys() - new.keys()}
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif isinstance(old[key], dict) and isinstance(value, dict):
            sub = merge_patch(old[key], value)
            if sub is not None:
                patch[key] = sub
        elif old[key] != value:
            patch[key] = value
    return patch or None
