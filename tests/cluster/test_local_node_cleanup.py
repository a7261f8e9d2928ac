"""A local node killed without cleanup leaves its bridge and pod namespaces; the next node removes
them (devcluster.pod_network.remove_stale_networks), and only those of nodes that are gone."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from flipt_operator.devcluster.pod_network import PodNetwork, _registry_dir, ip, remove_stale_networks

pytestmark = pytest.mark.cluster  # it needs root and iproute2, like the local node


def links() -> str:
    return ip("-br", "link").stdout


def namespaces() -> str:
    return ip("netns", "list").stdout


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_what_a_killed_node_left_is_removed_and_a_live_nodes_network_is_kept():
    live = PodNetwork(node="live").open()
    dead = PodNetwork(node="dead").open()
    try:
        live_pod, dead_pod = live.add_pod("uid-live"), dead.add_pod("uid-dead")
        # The dead node's process is gone: its record names a pid that no longer runs.
        record = _registry_dir() / f"{dead.bridge}.json"
        record.write_text(json.dumps(dict(json.loads(record.read_text()), pid=dead_pid())))
        removed = remove_stale_networks()
        assert dead.bridge in removed and live.bridge not in removed
        assert dead.bridge not in links() and dead_pod.netns not in namespaces()
        assert not record.exists()
        assert live.bridge in links() and live_pod.netns in namespaces()
        assert json.loads((_registry_dir() / f"{live.bridge}.json").read_text())["pid"] == os.getpid()
    finally:
        live.close()
        dead.close()
    assert live.bridge not in links() and live_pod.netns not in namespaces()
