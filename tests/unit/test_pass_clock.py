"""The clock the liveness probe reads: which namespace passes run past the deadline."""

from __future__ import annotations

from flipt_operator.handlers.deadline import PassClock


def test_pass_clock_reports_an_overdue_pass_once_and_forgets_it_when_it_ends():
    now = [100.0]
    clock = PassClock(lambda: now[0])
    seen: list[dict[str, float]] = []

    def pass_that_takes_ten_seconds() -> str:
        now[0] += 4
        seen.append(clock.overdue(5))
        now[0] += 6
        seen.append(clock.overdue(5))
        seen.append(clock.overdue(5))
        return "done"

    assert clock.time("team-a", pass_that_takes_ten_seconds) == "done"
    assert seen == [{}, {"team-a": 10.0}, {"team-a": 10.0}]
    assert clock.overdue(5) == {} and clock.oldest() == 0.0


def test_a_failed_pass_is_forgotten_too():
    now = [0.0]
    clock = PassClock(lambda: now[0])

    def failing() -> None:
        now[0] = 5.0
        raise RuntimeError("boom")

    try:
        clock.time("team-a", failing)
    except RuntimeError:
        pass
    assert clock.oldest() == 0.0 and clock.overdue(1) == {}
