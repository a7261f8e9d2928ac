"""Helpers for tests of the Helm chart against the test cluster: install a release, make
namespaces, and keep the suite's admin operator from doing the work of the operator under test."""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from flipt_operator.builders.crd_cli import WITHOUT_RULES
from flipt_operator.builders.crds import takes_validation_rules
from flipt_operator.devcluster.tools import ensure_helm

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "flipt-operator"


def _running_operators() -> list[int]:
    """Pids of `flipt-operator run` processes this test process started (the session fixture's)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == os.getpid() and b"flipt_operator" in cmdline and b"run" in cmdline:
            pids.append(int(proc.name))
    return pids


@pytest.fixture(scope="module", autouse=True)
def no_admin_operator() -> Iterator[None]:
    """The suite's admin operator (session fixture `operator`) must not do the work for ours:
    if an earlier module started it, pause it for this module and resume it afterwards."""
    paused = _running_operators()
    for pid in paused:
        os.kill(pid, signal.SIGSTOP)
    yield
    for pid in paused:
        os.kill(pid, signal.SIGCONT)


def helm(kube_cluster, *args: str) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([str(ensure_helm()), "--kubeconfig", str(kube_cluster.kubeconfig), *args],
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    return out


def make_namespace(api, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(
        name=name, labels={"flipt-operator/test": "true"})))
    return name


def install(kube_cluster, *sets: str) -> tuple[str, str]:
    """helm install a release; returns (release namespace, ServiceAccount name)."""
    release = f"fo-{uuid.uuid4().hex[:6]}"
    ns = f"{release}-system"
    # --force-conflicts: the suite applied crds/ itself first; Helm 4 server-side applies them again.
    args = ["install", release, str(CHART), "--namespace", ns, "--create-namespace", "--force-conflicts"]
    version = client.VersionApi(kube_cluster.api_client).get_code().git_version
    if not takes_validation_rules(version):
        # docs/install.md for servers before 1.28, which refuse the chart's CRDs (CEL rules):
        # the CRDs without rules and the peering CRDs with kubectl, then the chart without its crds/.
        kube_cluster.kubectl("apply", "-f", str(ROOT / "crds" / WITHOUT_RULES), check=True)
        kube_cluster.kubectl("apply", "-f", str(CHART / "crds" / "kopf.dev_peerings.yaml"), check=True)
        args.append("--skip-crds")
    for s in sets:
        args += ["--set", s]
    helm(kube_cluster, *args)
    return ns, f"{release}-flipt-operator"
