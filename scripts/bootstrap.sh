#!/usr/bin/env bash
# Installs and starts what the operator and its tests need on a fresh machine of this
# kind (Debian bookworm, Python 3.11, root). Skips whatever is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: etcd for the local API servers (Kubernetes itself is built from Go modules with
# the machine's Go, below); git (http-backend, daemon) and sshd for the
# git test servers; PostgreSQL, MariaDB and Redis for the database and cache tests; iproute2 and
# util-linux (ip, mount, nsenter) for the local node's pod namespaces.
APT_PACKAGES=(
  etcd-server iproute2 util-linux
  git openssh-server openssh-client openssl
  postgresql mariadb-server mariadb-client redis-server
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "bootstrap: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Python: a virtualenv in the checkout with the package and its test extras (pinned in pyproject.toml).
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e ".[test]" 2>&1 | grep -v "is ignored" || true

# Services the tests talk to.
bash scripts/services.sh

# kube-apiserver, kube-controller-manager and kube-scheduler of v1.35.4 (the current release) and
# v1.28.15 (the last before native sidecars) from Go modules: built once per machine, cached outside
# the checkout.
.venv/bin/flipt-operator dev-cluster build
