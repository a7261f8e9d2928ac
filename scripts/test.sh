#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what is missing, then runs pytest.
# Unit tests, integration tests (git servers, PostgreSQL, MariaDB, Redis) and cluster tests
# (a local kube-apiserver + etcd started by the suite).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/flipt-operator dev-cluster tools >/dev/null
# Every part the tests need is installed above, so a skip is a missing install step: fail on it.
export FLIPT_TESTS_REQUIRE_ALL=1
exec .venv/bin/pytest -q -rs -p no:cacheprovider --durations=15 "$@"
