"""The Helm chart: lint, render, least-privilege RBAC, values schema, CRDs identical to crds/."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from flipt_operator.devcluster.tools import ensure_helm
from flipt_operator.handlers.main import priority

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "flipt-operator"
PEERING_CRDS = "kopf.dev_peerings.yaml"


@pytest.fixture(scope="module")
def helm() -> Path:
    return ensure_helm()


def run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=120)


def render(helm: Path, *sets: str, namespace: str = "flipt-system") -> list[dict]:
    args = ["template", "flipt-operator", str(CHART), "--namespace", namespace]
    for s in sets:
        args += ["--set", s]
    out = run_helm(helm, *args)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def test_chart_crds_are_the_generated_ones():
    top = {p.name: p.read_text() for p in (ROOT / "crds").glob("*.yaml")}
    chart = {p.name: p.read_text() for p in (CHART / "crds").glob("*.yaml")}
    assert set(chart) == set(top) | {PEERING_CRDS}, "run `flipt-operator crds` (it writes both copies)"
    for name, text in top.items():
        assert chart[name] == text, f"charts/flipt-operator/crds/{name} drifted: run `flipt-operator crds`"
    kinds = {d["spec"]["names"]["kind"] for d in yaml.safe_load_all(chart[PEERING_CRDS])}
    assert kinds == {"ClusterKopfPeering", "KopfPeering"}


def test_lint(helm):
    out = run_helm(helm, "lint", "--strict", str(CHART))
    assert out.returncode == 0, out.stdout + out.stderr
    out = run_helm(helm, "lint", "--strict", str(CHART), "--set", "replicaCount=2",
                   "--set", "watchNamespaces={team-a,team-b}")
    assert out.returncode == 0, out.stdout + out.stderr


def test_default_render_is_cluster_wide_and_hardened(helm):
    docs = render(helm)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "Deployment", "Service", "ServiceAccount"]
    (dep,) = by_kind(docs, "Deployment")
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"
    pod = dep["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "flipt-operator"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["args"][0] == "run" and "--peering" not in container["args"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["FLIPT_OPERATOR_IMAGE"] == container["image"] == "flipt-operator:0.1.0"
    assert env["WATCH_NAMESPACES"] == ""
    (svc,) = by_kind(docs, "Service")
    assert svc["spec"]["ports"][0]["port"] == 9090
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    (binding,) = by_kind(docs, "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "flipt-operator", "namespace": "flipt-system"}]


def rules_of(docs: list[dict]) -> list[dict]:
    return [r for d in docs if d["kind"] in ("ClusterRole", "Role") for r in d["rules"]]


@pytest.mark.parametrize("sets", [(), ("replicaCount=2",), ("watchNamespaces={team-a,team-b}", "replicaCount=3")])
def test_rbac_has_no_wildcards_and_no_writes_to_secrets(helm, sets):
    for rule in rules_of(render(helm, *sets)):
        for key in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[key], rule
        assert "resourceNames" not in rule
        if "secrets" in rule["resources"]:
            assert rule["verbs"] == ["get", "list", "watch"]
        for verb in ("escalate", "bind", "impersonate", "update", "deletecollection"):
            assert verb not in rule["verbs"], rule


def test_namespaced_mode_has_only_roles(helm):
    docs = render(helm, "watchNamespaces={team-a,team-b}")
    assert not by_kind(docs, "ClusterRole") and not by_kind(docs, "ClusterRoleBinding")
    assert sorted(r["metadata"]["namespace"] for r in by_kind(docs, "Role")) == ["team-a", "team-b"]
    assert sorted(r["metadata"]["namespace"] for r in by_kind(docs, "RoleBinding")) == ["team-a", "team-b"]
    for rule in rules_of(docs):
        assert "customresourcedefinitions" not in rule["resources"]  # scanning is off: nothing cluster-wide
    (dep,) = by_kind(docs, "Deployment")
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["WATCH_NAMESPACES"] == "team-a,team-b"


def test_two_replicas_use_peering_with_distinct_priorities(helm):
    docs = render(helm, "replicaCount=2")
    (dep,) = by_kind(docs, "Deployment")
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert "--peering" in container["args"]
    env = {e["name"]: e for e in container["env"]}
    assert env["FLIPT_OPERATOR_PRIORITY"]["value"] == "auto"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"  # kopf peer identity
    (peering,) = by_kind(docs, "ClusterKopfPeering")
    assert peering["metadata"]["name"] == env["FLIPT_OPERATOR_PEERING"]["value"]
    assert any("clusterkopfpeerings" in r["resources"] for r in rules_of(docs))
    docs = render(helm, "replicaCount=2", "watchNamespaces={team-a}")
    assert [p["metadata"]["namespace"] for p in by_kind(docs, "KopfPeering")] == ["team-a"]
    assert not by_kind(docs, "ClusterKopfPeering")


def test_priority_auto_is_stable_and_distinct_per_pod(monkeypatch):
    assert priority("5") == 5
    seen = set()
    for pod in ("flipt-operator-6d4cf56db6-x2m4q", "flipt-operator-6d4cf56db6-9hzt7", "flipt-operator-7f-abcde"):
        monkeypatch.setenv("POD_NAME", pod)
        value = priority("auto")
        assert value == priority("auto") and value > 0
        seen.add(value)
    assert len(seen) == 3


@pytest.mark.parametrize("sets, message", [
    (("replicaCount=0",), "replicaCount"),
    (("replicaCount=two",), "replicaCount"),
    (("watchNamespaces={Team_A}",), "watchNamespaces"),
    (("logFormat=xml",), "logFormat"),
    (("imag.repository=x",), "imag"),
    (("image.pullPolicy=Sometimes",), "pullPolicy"),
    (("metrics.port=70000",), "metrics/port"),
])
def test_bad_values_fail_with_the_key_named(helm, sets, message):
    args = ["template", "flipt-operator", str(CHART)]
    for s in sets:
        args += ["--set", s]
    out = run_helm(helm, *args)
    assert out.returncode != 0
    assert message in out.stderr, out.stderr
