"""End to end: the real git-sync sidecar, run as a local process from the configuration the
operator rendered, against a real git server, reporting through the operator into
FliptStorage status on the real API server.

The sidecar runs on this machine's loopback and a Pod object stands for it (the test writes its
status as the kubelet would), so the tests run on the bare cluster (tests/support/on_bare_cluster.py):
on the session's cluster the scheduler would place that Pod and the node would run it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from flipt_operator.models.gitsync import GitSyncConfig
from tests.support import on_bare_cluster
from tests.support.deployments import read_deployment
from tests.support.git_servers import free_port, stop_process
from tests.support.gogit_standin import EXIT_CONFLICT, GoGitFliptStandin, standin_binary
from tests.support.kube_objects import condition, condition_is, create_custom, get_custom, put_secret
from tests.support.waiting import wait_for

# On the bare cluster (see the module's docstring).
kube_cluster = on_bare_cluster.kube_cluster
namespace = on_bare_cluster.namespace
operator = on_bare_cluster.operator

pytestmark = [pytest.mark.cluster, pytest.mark.integration]

FEATURES = "production/default/features.yaml"
STAGING = "staging/default/features.yaml"


def flags(value: str) -> str:
    return f'version: "1.4"\nnamespace: default\nflags:\n  - key: banner\n    name: {value}\n    enabled: true\n'


def run_sidecar_like_the_pod(api, namespace: str, tmp_path: Path, secret_values: dict[str, bytes]):
    """Read the rendered sidecar config, map the pod's paths to local ones, start it."""
    data = client.CoreV1Api(api).read_namespaced_config_map("flipt-config", namespace).data
    config = GitSyncConfig.model_validate(yaml.safe_load(data["git-sync.yaml"]))
    port, git_port = free_port(), free_port()
    local = config.model_copy(update={"listen_address": f"127.0.0.1:{port}", "git_listen_address": f"127.0.0.1:{git_port}"})
    storages = []
    for storage in local.storages:
        updates = {"repository_path": str(tmp_path / "repos" / storage.name)}
        if storage.credential:
            files = {}
            for field in ("username_file", "password_file", "token_file"):
                mounted = getattr(storage.credential, field)
                if mounted:
                    path = tmp_path / "secrets" / storage.name / Path(mounted).name
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(secret_values[Path(mounted).name])
                    files[field] = str(path)
            updates["credential"] = storage.credential.model_copy(update=files)
        storages.append(storage.model_copy(update=updates))
    local = local.model_copy(update={"storages": storages})
    (tmp_path / "git-sync.yaml").write_text(yaml.safe_dump(local.to_api()))
    log = open(tmp_path / "git-sync.log", "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "flipt_operator", "git-sync", "--config", str(tmp_path / "git-sync.yaml")],
        stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "POD_NAME": "flipt-abc12", "FLIPT_GIT_SYNC_REFUSAL_GRACE_SECONDS": "1"},
    )
    return process, port, git_port


def pretend_pod_runs(api, namespace: str, port: int) -> None:
    """The Pod the Deployment would have: the server's labels, the sidecar port, an IP (loopback)."""
    # The pass applies the ConfigMap before the Deployment: wait for the latter too.
    template = wait_for(lambda: read_deployment(api, namespace, "flipt"), timeout=30,
                        message="server Deployment").spec.template
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(namespace, {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "flipt-abc12", "labels": template.metadata.labels},
        "spec": {"containers": [{"name": "git-sync", "image": "flipt-operator:test",
                                 "ports": [{"name": "git-sync", "containerPort": port}]}]},
    })
    core.patch_namespaced_pod_status("flipt-abc12", namespace, {"status": {"phase": "Running", "podIP": "127.0.0.1"}})


def storage_status(api, ns, name):
    return get_custom(api, ns, "FliptStorage", name).get("status") or {}


def test_sidecar_state_reaches_fliptstorage_status(kube_cluster, operator, namespace, git_http_server, tmp_path):
    api = kube_cluster.api_client
    remote = git_http_server.create_repo("flags", {FEATURES: flags("v1"), STAGING: flags("s1")})
    password = git_http_server.users["flipt"].encode()
    put_secret(api, namespace, "repo", {"username": "flipt", "password": password})
    create_custom(api, namespace, "FliptCredential", "repo", {"type": "basic", "secretRef": {"name": "repo"}})
    for name, policy in (("strict-flags", "strict"), ("lenient-flags", "lenient")):
        create_custom(api, namespace, "FliptStorage", name, {"git": {
            "remote": git_http_server.url_for("flags"), "pollInterval": "1s", "fetchPolicy": policy,
            "credentialRef": {"name": "repo"}}})
    create_custom(api, namespace, "FliptEnvironment", "production",
                  {"storage": "strict-flags", "directory": "production", "default": True})
    create_custom(api, namespace, "FliptEnvironment", "staging", {"storage": "lenient-flags", "directory": "staging"})
    def rendered_for_both():
        data = client.CoreV1Api(api).read_namespaced_config_map("flipt-config", namespace).data or {}
        config = yaml.safe_load(data.get("git-sync.yaml") or "{}") or {}
        return {s["name"] for s in config.get("storages", [])} == {"strict-flags", "lenient-flags"}

    # A pass may run before the second environment exists: wait for the config that has both.
    wait_for(rendered_for_both, timeout=30, message="rendered sidecar config with both storages")

    sidecar, port, git_port = run_sidecar_like_the_pod(api, namespace, tmp_path, {"username": b"flipt", "password": password})
    try:
        pretend_pod_runs(api, namespace, port)
        head = remote.head()
        wait_for(lambda: storage_status(api, namespace, "strict-flags").get("sync", {}).get("revision") == head,
                 timeout=30, message="first revision in status")
        obj = wait_for(lambda: condition_is(api, namespace, "FliptStorage", "strict-flags", "Synced", "True"),
                       timeout=15)
        assert condition(obj, "Ready")["status"] == "True"
        table = kube_cluster.kubectl("get", "fliptstorage", "strict-flags", "-n", namespace, check=True).stdout
        assert head in table
        env = wait_for(lambda: get_custom(api, namespace, "FliptEnvironment", "production")["status"].get("revision"),
                       timeout=15)
        assert env == head

        # A commit on the remote shows up as the new revision.
        new = remote.commit({FEATURES: flags("v2")}, "remote edit")
        wait_for(lambda: storage_status(api, namespace, "strict-flags").get("sync", {}).get("revision") == new,
                 timeout=20, message="new remote revision in status")

        # Flipt (its go-git stand-in) writes the file expecting the revision it has, while the
        # remote changed that file: go-git gets a non-fast-forward, fetches, and refuses the write.
        flipt = GoGitFliptStandin(standin_binary(), tmp_path / "flipt", f"http://127.0.0.1:{git_port}/strict-flags.git")
        expected = flipt.fetch()
        assert expected == new
        remote_side = remote.commit({FEATURES: flags("remote-v3")}, "remote edit 2")
        written = flipt.write(FEATURES, flags("local-v3"), expect_revision=expected)
        assert written.code == EXIT_CONFLICT, written
        obj = wait_for(lambda: condition_is(api, namespace, "FliptStorage", "strict-flags", "Conflict", "True"),
                       timeout=30, message="Conflict=True")
        conflict = obj["status"]["sync"]["conflict"]
        assert conflict["files"] == [FEATURES]
        assert conflict["localRevision"] == expected and conflict["remoteRevision"] == remote_side
        assert FEATURES in condition(obj, "Conflict")["message"]
        assert remote.read(FEATURES).strip() == flags("remote-v3").strip()  # nothing pushed

        # An outage: strict is not Ready, lenient is Ready but degraded.
        git_http_server.outage()
        obj = wait_for(lambda: condition_is(api, namespace, "FliptStorage", "strict-flags", "Ready", "False",
                                            "FetchFailed"), timeout=30, message="strict not Ready")
        assert condition(obj, "Synced")["status"] == "False"
        obj = wait_for(lambda: condition_is(api, namespace, "FliptStorage", "lenient-flags", "Ready", "True",
                                            "Degraded"), timeout=30,
                       message="lenient storage Ready but degraded")
        assert obj["status"]["sync"]["degraded"] is True
        assert password.decode() not in str(obj) + str(get_custom(api, namespace, "FliptStorage", "strict-flags"))

        # The remote comes back: strict is Ready again without any restart.
        git_http_server.outage(False)
        obj = wait_for(lambda: condition_is(api, namespace, "FliptStorage", "strict-flags", "Ready", "True"),
                       timeout=30, message="strict Ready again after the outage")
        assert condition(obj, "Conflict")["status"] == "True"  # the conflict is still there, reported
    finally:
        stop_process(sidecar)
    assert password.decode() not in operator.logs()
