"""Every Kubernetes API call of the operator is bounded: against a stand-in for a hung API
server (a loopback listener that accepts and never answers, tests/support/silent_peers.py),
each call fails within its (connect, read) bound instead of holding the pass for good."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import kubernetes
import pytest

from flipt_operator.clients.kube import ApiTimeout, Kube, is_transient
from flipt_operator.models.kinds import ENVIRONMENT
from tests.support.silent_peers import full_backlog_listener, silent_listener

pytestmark = pytest.mark.integration

BOUND = ApiTimeout(connect=0.5, read=1.0)


def _kube(port: int, timeout: ApiTimeout = BOUND) -> Kube:
    configuration = kubernetes.client.Configuration()
    configuration.host = f"http://127.0.0.1:{port}"
    return Kube(kubernetes.client.ApiClient(configuration), timeout)


# One call of each API group and shape the operator uses (raw and deserialised answers).
CALLS: dict[str, Callable[[Kube], Any]] = {
    "custom objects": lambda kube: kube.list(ENVIRONMENT, "ns"),
    "secret by name": lambda kube: kube.get_secret("ns", "s"),
    "apps children": lambda kube: kube.list_children("Deployment", "ns", "a=b"),
    "batch children": lambda kube: kube.read_child("Job", "ns", "j"),
    "pods": lambda kube: kube.list_pods("ns", "a=b"),
    "version": lambda kube: kube.server_git_version(),
    "liveness probe's call": lambda kube: kube.core.get_api_resources(),
}


def _fails_within(call: Callable[[], Any], bound: float) -> BaseException:
    started = time.monotonic()
    with pytest.raises(Exception) as caught:
        call()
    elapsed = time.monotonic() - started
    assert elapsed < bound, f"took {elapsed:.1f}s"
    return caught.value


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
def test_a_silent_api_server_fails_the_call_within_the_read_bound(call: Callable[[Kube], Any]) -> None:
    with silent_listener() as port:
        kube = _kube(port)
        error = _fails_within(lambda: call(kube), BOUND.read + 1.0)
    # One attempt, not urllib3's default four: otherwise the bound would be four times as long.
    assert is_transient(error), repr(error)


def test_an_api_server_that_takes_no_connection_fails_within_the_connect_bound() -> None:
    with full_backlog_listener() as port:
        kube = _kube(port, ApiTimeout(connect=0.5, read=30.0))
        error = _fails_within(lambda: kube.list(ENVIRONMENT, "ns"), 0.5 + 1.0)
    assert is_transient(error), repr(error)


def test_a_call_may_still_set_its_own_bound() -> None:
    with silent_listener() as port:
        kube = _kube(port, ApiTimeout(connect=30.0, read=30.0))
        _fails_within(lambda: kube.core.get_api_resources(_request_timeout=(0.5, 0.5)), 1.5)


def test_the_bound_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLIPT_OPERATOR_API_CONNECT_TIMEOUT", "2.5")
    monkeypatch.setenv("FLIPT_OPERATOR_API_READ_TIMEOUT", "7")
    assert ApiTimeout.from_env() == ApiTimeout(2.5, 7.0)
    monkeypatch.delenv("FLIPT_OPERATOR_API_CONNECT_TIMEOUT")
    monkeypatch.delenv("FLIPT_OPERATOR_API_READ_TIMEOUT")
    assert ApiTimeout.from_env() == ApiTimeout(5.0, 30.0)
