"""A pass that runs past the deadline fails the operator's liveness probe (and is logged and
counted), and the probe recovers once the pass ends. The pass is held up by a real hang: its
database check talks to a stand-in for a hung PostgreSQL (a loopback listener that accepts and
never answers), with a database timeout longer than the pass deadline."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from tests.support.kube_objects import create_custom
from tests.support.operator_fixtures import metric_value, start_operator
from tests.support.silent_peers import silent_listener
from tests.support.waiting import wait_for


def liveness_status(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.timeout(180)
def test_a_pass_past_the_deadline_fails_liveness_until_it_ends(kube_cluster, namespace, tmp_path):
    api = kube_cluster.api_client
    with silent_listener() as port:
        op = start_operator(
            kube_cluster.kubeconfig, tmp_path / "operator.log",
            extra_args=("-n", namespace, "--pass-deadline", "2"),
            # The database check may wait 60 s for this server: far past the 2 s deadline.
            env={"FLIPT_OPERATOR_DATABASE_TIMEOUT": "60"},
        )
        try:
            create_custom(api, namespace, "FliptStorage", "db",
                          {"database": {"url": f"postgres://postgres@127.0.0.1:{port}/flipt?sslmode=disable"}})
            create_custom(api, namespace, "FliptEnvironment", "prod", {"storage": "db", "default": True})
            # kopf caches probe results for 10 s: allow for that on top of the deadline.
            wait_for(lambda: liveness_status(op.liveness_port) == 500, timeout=30,
                     message="liveness fails while the pass hangs")
            assert metric_value(op.metrics(), "flipt_operator_passes_overdue_total") == 1
            assert metric_value(op.metrics(), "flipt_operator_oldest_pass_seconds") > 2
            assert f"pass over {namespace} has run for" in op.logs()
        except BaseException:
            op.stop()
            raise
    # The listener is gone: the database check ends (connection closed), so does the pass.
    try:
        wait_for(lambda: liveness_status(op.liveness_port) == 200, timeout=30,
                 message="liveness recovers once the pass ended")
        assert f"pass over {namespace} ended after" in op.logs()
        assert metric_value(op.metrics(), "flipt_operator_oldest_pass_seconds") < 2
    finally:
        op.stop()
