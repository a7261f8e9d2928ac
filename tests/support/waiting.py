"""Polling helpers for tests: wait until a condition holds, with a clear timeout error."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 30.0, interval: float = 0.05,
             message: str = "") -> T:
    """Call `predicate` until it returns something truthy; return that value.

    Exceptions from `predicate` count as "not yet". On timeout, raise TimeoutError naming
    the last value or exception.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = predicate()
            if value:
                return value
            last = value
        except Exception as exc:  # noqa: BLE001 - "not yet", reported on timeout
            last = exc
        if time.monotonic() >= deadline:
            what = message or getattr(predicate, "__name__", "condition")
            raise TimeoutError(f"{what} not met after {timeout:.1f}s (last: {last!r})")
        time.sleep(interval)


async def async_wait_for(predicate: Callable[[], T | Awaitable[T]], timeout: float = 30.0,
                         interval: float = 0.05, message: str = "") -> T:
    """`wait_for` for async tests; `predicate` may be sync or return an awaitable."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = predicate()
            if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
                value = await value
            if value:
                return value  # type: ignore[return-value]
            last = value
        except Exception as exc:  # noqa: BLE001
            last = exc
        if time.monotonic() >= deadline:
            what = message or getattr(predicate, "__name__", "condition")
            raise TimeoutError(f"{what} not met after {timeout:.1f}s (last: {last!r})")
        await asyncio.sleep(interval)
