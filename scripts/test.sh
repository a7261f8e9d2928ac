#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what is missing, then runs pytest.
# Unit tests, integration tests (git servers, PostgreSQL, MariaDB, Redis) and cluster tests
# (a local kube-apiserver + etcd started by the suite).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/flipt-operator dev-cluster tools >/dev/null
exec .venv/bin/pytest -q -p no:cacheprovider --durations=15 "$@"
