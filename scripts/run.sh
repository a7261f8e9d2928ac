#!/usr/bin/env bash
# Runs the operator with the example resources applied.
#
# With $KUBECONFIG set: applies CRDs and examples/ as they are (their git remote is a hosted one)
# and keeps the operator running.
# Without it: starts a local Kubernetes v1.35 (API server, controller-manager, scheduler and a
# local node that runs the pods, docs/local-cluster.md) and a git remote on this machine with a
# small flag repository, applies examples/ with only the remote patched to it, waits until every
# kind is Ready through the real controllers, then commits a change upstream and shows the new
# revision reach the storages' status. Ctrl-C stops everything it started.
#
# The Flipt binary cannot be built on these machines (docs/local-cluster.md): the local node runs
# a stand-in in Flipt's place that answers its health check, so no flag is evaluated here; the
# git-sync sidecar, the operator and the controllers are the real ones.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
BIN="$(.venv/bin/flipt-operator dev-cluster tools)"
KUBECTL="$BIN/kubectl"
NS=flipt-examples
WORK="$(mktemp -d -t flipt-run-XXXX)"
CLUSTER_STATE="$WORK/cluster"
PIDS=()
LOCAL=0

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "$LOCAL" = 1 ]; then
    echo "run: stopping the local cluster"
    .venv/bin/flipt-operator dev-cluster stop --state-dir "$CLUSTER_STATE" || true
  fi
  rm -rf "$WORK/remote" "$WORK/clone"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -z "${KUBECONFIG:-}" ]; then
  LOCAL=1
  echo "run: starting a local Kubernetes v1.35 with its controllers and a local node (logs in $CLUSTER_STATE)"
  eval "$(.venv/bin/flipt-operator dev-cluster start --pods --state-dir "$CLUSTER_STATE")"
fi
echo "run: using KUBECONFIG=$KUBECONFIG"

# The CRDs with CEL rules need Kubernetes >= 1.28; older servers get crds/pre-1.28/ (docs/install.md).
SERVER_VERSION="$("$KUBECTL" version -o json | .venv/bin/python -c 'import json, sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])')"
"$KUBECTL" apply -f "$(.venv/bin/flipt-operator crds --for-server "$SERVER_VERSION")/"
"$KUBECTL" wait --for=condition=Established crd --all --timeout=60s >/dev/null

LOG="$WORK/operator.log"
.venv/bin/flipt-operator run --liveness http://127.0.0.1:8089/healthz >"$LOG" 2>&1 &
PIDS+=($!)
echo "run: operator pid ${PIDS[-1]}, JSON logs in $LOG"

"$KUBECTL" create namespace "$NS" --dry-run=client -o yaml | "$KUBECTL" apply -f - >/dev/null

if [ "$LOCAL" = 0 ]; then
  "$KUBECTL" apply -n "$NS" -f examples/
  "$KUBECTL" wait -n "$NS" --for=jsonpath='{.status.observedGeneration}'=1 fliptcredential,fliptstorage,fliptenvironment --all --timeout=120s
  "$KUBECTL" get flipt -n "$NS" -o wide
  echo "run: examples/ point at a hosted git remote of their own; point them at yours to see them Ready."
  echo "run: the operator keeps running; Ctrl-C stops it."
  wait "${PIDS[0]}"
  exit
fi

# A git remote where the node's pods reach this machine, accepting the examples' access token.
NODE_IP="$("$KUBECTL" get nodes -o jsonpath='{.items[0].status.addresses[?(@.type=="InternalIP")].address}')"
.venv/bin/python -c 'from tests.support.sample_remote import examples_token; print(examples_token(), end="")' >"$WORK/token"
.venv/bin/python scripts/sample_git_remote.py --host "$NODE_IP" --root "$WORK/remote" --token-file "$WORK/token" >"$WORK/remote.out" 2>"$WORK/remote.log" &
PIDS+=($!)
for _ in $(seq 100); do grep -q '^url=' "$WORK/remote.out" 2>/dev/null && break; sleep 0.1; done
REMOTE="$(sed -n 's/^url=//p' "$WORK/remote.out")"
[ -n "$REMOTE" ] || { echo "run: the sample git remote did not start: $(cat "$WORK/remote.log")"; exit 1; }
echo "run: sample git remote $REMOTE (git http-backend with basic auth, pid ${PIDS[-1]})"

# examples/ as they are, with only the remote pointed at the local one.
.venv/bin/python - "$REMOTE" >"$WORK/examples.yaml" <<'EOF'
import sys, yaml
from tests.support.sample_remote import examples_pointed_at
print(yaml.safe_dump_all(examples_pointed_at(sys.argv[1]), sort_keys=False))
EOF
"$KUBECTL" apply -n "$NS" -f "$WORK/examples.yaml"
echo "run: waiting for every kind to be Ready (the server's pods run on the local node)"
"$KUBECTL" wait -n "$NS" --for=condition=Ready fliptcredential,fliptstorage --all --timeout=180s
"$KUBECTL" wait -n "$NS" --for=condition=Ready fliptenvironment --all --timeout=300s
"$KUBECTL" get flipt -n "$NS" -o wide
"$KUBECTL" get pods -n "$NS" -o wide

revision() { "$KUBECTL" get fliptstorage -n "$NS" production-flags -o jsonpath='{.status.sync.revision}'; }
BEFORE="$(revision)"
echo "run: production-flags serves $BEFORE; committing a change to main upstream"
git clone -q "$WORK/remote/flags.git" "$WORK/clone"
sed -i 's/enabled: false/enabled: true/' "$WORK/clone/production/default/features.yaml"
git -C "$WORK/clone" -c user.name=run.sh -c user.email=run@example.com commit -qam "Enable new-checkout in production"
git -C "$WORK/clone" push -q origin main
AFTER="$(git -C "$WORK/clone" rev-parse HEAD)"
for _ in $(seq 120); do [ "$(revision)" = "$AFTER" ] && break; sleep 1; done
if [ "$(revision)" != "$AFTER" ]; then echo "run: the new revision $AFTER did not reach the status"; exit 1; fi
echo "run: production-flags now serves $AFTER (the sidecar fetched it; Flipt fetches it from the sidecar)"
"$KUBECTL" get fliptstorage -n "$NS" -o wide
echo "run: Flipt itself is a stand-in on this machine (it cannot be built here), so no flag is evaluated."
echo "run: the operator keeps running (logs in $LOG); Ctrl-C stops it, the git remote and the cluster."
wait "${PIDS[0]}"
