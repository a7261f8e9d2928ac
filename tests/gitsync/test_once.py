"""The init container rendered for clusters without native sidecars (`git-sync ... --once`),
run as rendered: command, args, env and the ConfigMap's git-sync.yaml from
`build_server_manifests`, against a real git server with basic auth.

No container runtime here, so the pod's mounts are laid out under a temporary directory: every
path the container would see under a volumeMount is mapped to the same path below it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from flipt_operator.builders.server_manifests import GITSYNC_KEY, build_server_manifests
from flipt_operator.models.plan import OperatorDefaults
from tests.support.git_servers import GitHttpServer, git
from tests.support.servers import SIDECAR_IMAGE, credential, env, ok_plan
from tests.support.servers import git as git_storage

pytestmark = pytest.mark.integration


class RenderedInitContainer:
    """The init container of the rendered Deployment, with its mounts under `root`."""

    def __init__(self, root: Path, remote: str, policy: str, secret: dict[str, str]) -> None:
        plan = ok_plan(
            {"prod": env(storage="flags", default=True)},
            {"flags": git_storage(remote, credentialRef={"name": "git-auth"}, fetchPolicy=policy, pollInterval="1s")},
            {"git-auth": credential("basic", "git-auth-secret")},
            {"git-auth-secret": set(secret)},
            defaults=OperatorDefaults(sidecar_image=SIDECAR_IMAGE, native_sidecar=False),
        )
        manifests = build_server_manifests(plan)
        pod = manifests.deployment["spec"]["template"]["spec"]
        (self.container,) = [c for c in pod["initContainers"] if c["name"].endswith("-init")]
        volumes = {v["name"]: v for v in pod["volumes"]}
        self.root = root
        self.mounts = sorted(self.container["volumeMounts"], key=lambda m: -len(m["mountPath"]))
        for mount in self.container["volumeMounts"]:
            volume, target = volumes[mount["name"]], self.path(mount["mountPath"])
            if "configMap" in volume:
                target.parent.mkdir(parents=True, exist_ok=True)
                document = yaml.safe_load(manifests.config_map["data"][mount["subPath"]])
                assert mount["subPath"] == GITSYNC_KEY
                target.write_text(yaml.safe_dump(self.map_paths(document)))
            elif "secret" in volume:
                target.mkdir(parents=True, exist_ok=True)
                for item in volume["secret"]["items"]:
                    (target / item["path"]).write_text(secret[item["key"]])
            else:
                target.mkdir(parents=True, exist_ok=True)
        self.config = yaml.safe_load(self.path(self.container["command"][self.container["command"].index("--config") + 1]).read_text())

    def path(self, in_pod: str) -> Path:
        return self.root / in_pod.lstrip("/")

    def map_paths(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: self.map_paths(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.map_paths(v) for v in value]
        if isinstance(value, str) and any(
            value == m["mountPath"] or value.startswith(m["mountPath"].rstrip("/") + "/") for m in self.mounts
        ):
            return str(self.path(value))
        return value

    def run(self) -> subprocess.CompletedProcess[str]:
        command = self.map_paths(list(self.container["command"]) + list(self.container.get("args", [])))
        executable = Path(sys.executable).parent / command[0]  # the console script, as in the image
        environment = {"PATH": os.environ["PATH"]}
        for variable in self.container["env"]:
            environment[variable["name"]] = self.map_paths(variable.get("value", "flipt-0"))  # fieldRefs: a pod name
        return subprocess.run([str(executable), *command[1:]], env=environment, capture_output=True, text=True,
                              timeout=120, check=False)  # fmt: skip

    def repository(self) -> Path:
        return Path(self.config["storages"][0]["repositoryPath"])


def head_of(repository: Path, branch: str = "main") -> str | None:
    out = git("rev-parse", "--verify", "-q", f"refs/heads/{branch}", cwd=repository, check=False)
    return out or None


@pytest.fixture
def secret(git_http_server: GitHttpServer) -> dict[str, str]:
    return {"username": "flipt", "password": git_http_server.users["flipt"]}


def test_rendered_init_container_syncs_once_and_exits(
    git_http_server: GitHttpServer, secret: dict[str, str], tmp_path: Path
) -> None:
    remote = git_http_server.create_repo()
    init = RenderedInitContainer(tmp_path / "pod", remote.url, "strict", secret)
    assert init.container["command"][-1] == "--once"
    result = init.run()
    assert result.returncode == 0, result.stderr
    assert "unrecognized arguments" not in result.stderr
    assert head_of(init.repository()) == remote.head()
    assert secret["password"] not in result.stderr + result.stdout


def test_strict_init_container_fails_when_upstream_cannot_be_fetched(
    git_http_server: GitHttpServer, secret: dict[str, str], tmp_path: Path
) -> None:
    remote = git_http_server.create_repo()
    init = RenderedInitContainer(tmp_path / "pod", remote.url, "strict", secret)
    assert init.run().returncode == 0  # a revision is on the volume now
    git_http_server.outage()
    result = init.run()
    assert result.returncode == 1
    assert "storage not synced" in result.stderr and '"storage": "flags"' in result.stderr


def test_lenient_init_container_uses_the_revision_on_the_volume(
    git_http_server: GitHttpServer, secret: dict[str, str], tmp_path: Path
) -> None:
    remote = git_http_server.create_repo()
    init = RenderedInitContainer(tmp_path / "pod", remote.url, "lenient", secret)
    git_http_server.outage()
    result = init.run()
    assert result.returncode == 1, "lenient with nothing on the volume has nothing to serve"
    git_http_server.outage(False)
    assert init.run().returncode == 0
    served = head_of(init.repository())
    git_http_server.outage()
    result = init.run()
    assert result.returncode == 0, result.stderr
    assert '"degraded": true' in result.stderr
    assert head_of(init.repository()) == served == remote.head()
