"""Shared fixtures. Each area keeps its fixtures in tests/support/ and lists the module here."""

pytest_plugins: list[str] = [
    "tests.support.git_servers",
    "tests.support.operator_fixtures",
    "tests.support.kube_fixtures",
    "tests.support.redis_fixtures",
]
