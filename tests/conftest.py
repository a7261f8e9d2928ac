"""Shared fixtures. Each area keeps its fixtures in tests/support/ and lists the module here."""

import os

import pytest

pytest_plugins: list[str] = [
    "tests.support.git_servers",
    "tests.support.kube_fixtures",
    "tests.support.operator_fixtures",  # after kube_fixtures, which it imports
    "tests.support.redis_fixtures",
]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """With FLIPT_TESTS_REQUIRE_ALL=1 (scripts/test.sh sets it) a skip is a failure: the test
    command installs every part the tests need (Redis, sshd, PostgreSQL, MariaDB, hadolint, ...),
    so a skip means an install step is missing, and that must not pass silently in CI."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("FLIPT_TESTS_REQUIRE_ALL") == "1" and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped, but FLIPT_TESTS_REQUIRE_ALL=1 forbids skips: {reason}"
