"""The current cluster's local node (devcluster.pod_runner) under the real scheduler, Job,
Deployment and ReplicaSet controllers: pods run as processes with their volumes, environment,
probes and own IP, and the controllers decide completion and availability from what it reports."""

from __future__ import annotations

import urllib.request

import pytest
from kubernetes import client

from tests.support.kube_objects import put_secret
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster

HOST_IMAGE = "debian:bookworm"  # any image but the operator's and Flipt's runs the host's own commands


def job_condition(api, ns, name):
    job = client.BatchV1Api(api).read_namespaced_job(name, ns)
    done = [c.type for c in job.status.conditions or [] if c.type in ("Complete", "Failed") and c.status == "True"]
    return done[0] if done else None


def create_job(api, ns, name, pod_spec, backoff_limit=0):
    client.BatchV1Api(api).create_namespaced_job(ns, {
        "metadata": {"name": name},
        "spec": {"backoffLimit": backoff_limit, "template": {"spec": {"restartPolicy": "Never", **pod_spec}}},
    })


def test_jobs_complete_or_fail_by_their_exit_code_with_volumes_env_and_the_pods_user(current_kube_cluster,
                                                                                     current_namespace):
    api, ns = current_kube_cluster.api_client, current_namespace
    put_secret(api, ns, "token", {"token": "s3cret"})
    client.CoreV1Api(api).create_namespaced_config_map(ns, {"metadata": {"name": "settings"},
                                                            "data": {"mode": "strict"}})
    check = ('test "$TOKEN" = s3cret && test "$(cat /etc/settings/mode)" = strict && test "$POD_NS" = "$EXPECTED_NS" '
             '&& test "$(id -u):$(id -g)" = 100:1000 && echo written > /scratch/out && test ! -w /etc/settings/mode')
    spec = {
        "securityContext": {"runAsUser": 100, "runAsGroup": 1000, "fsGroup": 1000},
        "containers": [{
            "name": "check", "image": HOST_IMAGE, "command": ["sh", "-ec", check],
            "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "token", "key": "token"}}},
                    {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                    {"name": "EXPECTED_NS", "value": ns}],
            "volumeMounts": [{"name": "settings", "mountPath": "/etc/settings", "readOnly": True},
                             {"name": "scratch", "mountPath": "/scratch"}],
        }],
        "volumes": [{"name": "settings", "configMap": {"name": "settings"}}, {"name": "scratch", "emptyDir": {}}],
    }
    create_job(api, ns, "passes", spec)
    failing = {"containers": [{"name": "fail", "image": HOST_IMAGE, "command": ["sh", "-c", "exit 3"]}]}
    create_job(api, ns, "fails", failing)
    assert wait_for(lambda: job_condition(api, ns, "passes"), timeout=90, message="job passes done") == "Complete", \
        current_kube_cluster.node.container_log(ns, "passes", "check")
    assert wait_for(lambda: job_condition(api, ns, "fails"), timeout=90, message="job fails done") == "Failed"
    pods = client.CoreV1Api(api).list_namespaced_pod(ns, label_selector="job-name=fails").items
    assert pods[0].status.container_statuses[0].state.terminated.exit_code == 3


def test_a_native_sidecar_gates_the_containers_and_stops_when_a_job_is_done(current_kube_cluster, current_namespace):
    api, ns = current_kube_cluster.api_client, current_namespace
    spec = {
        "initContainers": [{
            "name": "sidecar", "image": HOST_IMAGE, "restartPolicy": "Always",
            "command": ["sh", "-c", "sleep 1; echo up > /shared/ready; exec sleep 3600"],
            "startupProbe": {"exec": {"command": ["test", "-f", "/shared/ready"]}, "periodSeconds": 1,
                             "failureThreshold": 30},
            "volumeMounts": [{"name": "shared", "mountPath": "/shared"}],
        }],
        "containers": [{"name": "main", "image": HOST_IMAGE, "command": ["cat", "/shared/ready"],
                        "volumeMounts": [{"name": "shared", "mountPath": "/shared"}]}],
        "volumes": [{"name": "shared", "emptyDir": {}}],
    }
    create_job(api, ns, "with-sidecar", spec)
    # Complete only if main ran after the sidecar's startup probe passed (else `cat` fails) and the
    # sidecar, which would sleep an hour, was stopped once main was done.
    assert wait_for(lambda: job_condition(api, ns, "with-sidecar"), timeout=90, message="job done") == "Complete"
    pod = client.CoreV1Api(api).list_namespaced_pod(ns, label_selector="job-name=with-sidecar").items[0]
    assert current_kube_cluster.node.container_log(ns, pod.metadata.name, "main").rstrip().endswith("up")


def test_a_deployment_is_available_through_its_probes_serves_on_pod_ips_and_its_pods_go_with_it(
        current_kube_cluster, current_namespace):
    api, ns = current_kube_cluster.api_client, current_namespace
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    core.create_namespaced_config_map(ns, {"metadata": {"name": "site"}, "data": {"index.html": "hello\n"}})
    labels = {"app": "web"}
    apps.create_namespaced_deployment(ns, {
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {"containers": [{
                "name": "web", "image": HOST_IMAGE,
                "command": ["python3", "-m", "http.server", "8000", "-d", "/srv"],
                "ports": [{"name": "http", "containerPort": 8000}],
                "readinessProbe": {"httpGet": {"path": "/index.html", "port": "http"}, "periodSeconds": 1},
                "livenessProbe": {"tcpSocket": {"port": 8000}, "periodSeconds": 2, "initialDelaySeconds": 5},
                "volumeMounts": [{"name": "site", "mountPath": "/srv"}],
            }], "volumes": [{"name": "site", "configMap": {"name": "site"}}]},
        }},
    })

    def available():
        dep = apps.read_namespaced_deployment("web", ns)
        return dep.status.available_replicas == 2 and dep
    wait_for(available, timeout=90, message="Deployment web available through the real controllers")
    pods = core.list_namespaced_pod(ns, label_selector="app=web").items
    ips = {p.status.pod_ip for p in pods}
    assert len(ips) == 2
    for ip in ips:
        with urllib.request.urlopen(f"http://{ip}:8000/index.html", timeout=5) as resp:
            assert resp.read() == b"hello\n"
    uids = {p.metadata.uid for p in pods}
    apps.delete_namespaced_deployment("web", ns)
    wait_for(lambda: not {p.metadata.uid for p in core.list_namespaced_pod(ns).items} & uids, timeout=60,
             message="the Deployment's pods deleted (garbage collector, then the node)")
    for ip in ips:
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://{ip}:8000/index.html", timeout=2)


def test_a_failing_liveness_probe_restarts_the_container(current_kube_cluster, current_namespace):
    api, ns = current_kube_cluster.api_client, current_namespace
    core = client.CoreV1Api(api)
    # Alive while /tmp/alive exists; the container removes it after a moment, so the probe fails.
    core.create_namespaced_pod(ns, {
        "metadata": {"name": "flaky"},
        "spec": {"containers": [{
            "name": "app", "image": HOST_IMAGE,
            "command": ["sh", "-c", "touch /tmp/alive; sleep 2; rm /tmp/alive; exec sleep 3600"],
            "livenessProbe": {"exec": {"command": ["test", "-f", "/tmp/alive"]}, "periodSeconds": 1,
                              "failureThreshold": 2},
        }]},
    })

    def restarted():
        status = core.read_namespaced_pod("flaky", ns).status
        statuses = status.container_statuses or []
        return statuses and statuses[0].restart_count >= 1 and statuses[0].last_state.terminated
    last = wait_for(restarted, timeout=60, message="the container restarted after its liveness probe failed")
    assert last.exit_code == 143  # stopped by SIGTERM, as the kubelet does


def test_the_operators_image_runs_when_a_volume_covers_the_checkout(current_kube_cluster, current_namespace):
    # The rendered servers mount an emptyDir at /tmp; a checkout under /tmp (a CI clone) must not
    # vanish from the operator's image, which runs this package's interpreter.
    import sys
    from pathlib import Path

    import flipt_operator

    api, ns = current_kube_cluster.api_client, current_namespace
    tops = sorted({"/" + Path(sys.prefix).resolve().parts[1], "/" + Path(flipt_operator.__file__).resolve().parts[1]})
    spec = {
        "containers": [{
            "name": "operator", "image": "flipt-operator:0.1.0", "args": ["crds", "--help"],
            "volumeMounts": [{"name": f"cover-{i}", "mountPath": top} for i, top in enumerate(tops)],
        }],
        "volumes": [{"name": f"cover-{i}", "emptyDir": {}} for i in range(len(tops))],
    }
    create_job(api, ns, "covered", spec)
    assert wait_for(lambda: job_condition(api, ns, "covered"), timeout=90, message="job covered done") == "Complete", \
        current_kube_cluster.node.container_log(ns, "covered", "operator")
