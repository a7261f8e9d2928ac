#!/usr/bin/env bash
# Runs the operator with the example resources applied.
# Against $KUBECONFIG when it is set; otherwise against a local kube-apiserver + etcd that
# this script starts (stop it with `.venv/bin/flipt-operator dev-cluster stop`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
BIN="$(.venv/bin/flipt-operator dev-cluster tools)"
KUBECTL="$BIN/kubectl"

if [ -z "${KUBECONFIG:-}" ]; then
  eval "$(.venv/bin/flipt-operator dev-cluster start)"
fi
echo "run: using KUBECONFIG=$KUBECONFIG"

# The CRDs with CEL rules need Kubernetes >= 1.28; older servers get crds/pre-1.28/ (docs/install.md).
SERVER_VERSION="$("$KUBECTL" version -o json | .venv/bin/python -c 'import json, sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])')"
"$KUBECTL" apply -f "$(.venv/bin/flipt-operator crds --for-server "$SERVER_VERSION")/"
"$KUBECTL" wait --for=condition=Established crd --all --timeout=60s >/dev/null

LOG="$(mktemp -t flipt-operator-XXXX.log)"
.venv/bin/flipt-operator run --liveness http://127.0.0.1:8089/healthz >"$LOG" 2>&1 &
OPERATOR_PID=$!
trap 'kill $OPERATOR_PID 2>/dev/null || true' EXIT
echo "run: operator pid $OPERATOR_PID, JSON logs in $LOG"

"$KUBECTL" create namespace flipt-examples --dry-run=client -o yaml | "$KUBECTL" apply -f - >/dev/null
"$KUBECTL" apply -n flipt-examples -f examples/
"$KUBECTL" wait -n flipt-examples --for=condition=Ready fliptcredential,fliptstorage --all --timeout=60s
"$KUBECTL" wait -n flipt-examples --for=jsonpath='{.status.observedGeneration}'=1 fliptenvironment --all --timeout=60s
"$KUBECTL" get flipt -n flipt-examples -o wide
"$KUBECTL" get deployment,service,configmap -n flipt-examples -l app.kubernetes.io/managed-by=flipt-operator
echo "run: on the local API server no controllers run, so the server's pods never start and the"
echo "run: environments wait for the Deployment (Ready=False, RolloutPending). On a real cluster they become Ready."
echo "run: the operator keeps running; Ctrl-C stops it."
wait $OPERATOR_PID
