"""The examples/ set is valid and reconciles (what scripts/run.sh applies)."""

from pathlib import Path

import pytest

from tests.support.deployments import StandInDeploymentController
from tests.support.kube_objects import condition_is
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_examples_apply_and_reconcile(kube_cluster, operator, namespace):
    out = kube_cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES))
    assert out.returncode == 0, out.stderr
    api = kube_cluster.api_client
    wait_for(lambda: condition_is(api, namespace, "FliptCredential", "flags-repo", "Ready", "True"), timeout=20)
    for storage in ("production-flags", "staging-flags"):
        wait_for(lambda storage=storage: condition_is(api, namespace, "FliptStorage", storage, "Ready", "True"),
                 timeout=20)
    with StandInDeploymentController(api, namespace):
        for env in ("production", "staging"):
            wait_for(lambda env=env: condition_is(api, namespace, "FliptEnvironment", env, "Ready", "True"),
                     timeout=20)
    table = kube_cluster.kubectl("get", "flipt", "-n", namespace, check=True).stdout
    assert table.count("True") >= 5
