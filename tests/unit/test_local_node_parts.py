"""The local node's pure parts: what an image runs, Kubernetes' $(VAR) expansion, and the Flipt
stand-in's refusals (it must never pass for Flipt where Flipt's own result matters)."""

from __future__ import annotations

import subprocess
import sys
import urllib.request

import pytest

from flipt_operator.devcluster.cluster import free_port
from flipt_operator.devcluster.images import ImageError, ImageMap, repository
from flipt_operator.devcluster.pod_runner import expand
from tests.support.waiting import wait_for

IMAGES = ImageMap(operator_entrypoint=("/venv/bin/flipt-operator",), flipt_entrypoint=("python", "-m", "standin"))


@pytest.mark.parametrize(("image", "repo"), [
    ("docker.flipt.io/flipt/flipt:v2.11.0", "docker.flipt.io/flipt/flipt"),
    ("registry:5000/team/flipt-operator:0.1.0", "registry:5000/team/flipt-operator"),
    ("flipt-operator@sha256:abc", "flipt-operator"),
    ("debian", "debian"),
])
def test_repository_drops_tag_and_digest_but_not_a_registry_port(image, repo):
    assert repository(image) == repo


def test_images_map_to_what_they_contain():
    assert IMAGES.command("flipt-operator:0.1.0", ["flipt-operator", "git-sync", "--config", "c"], []) == \
        ["/venv/bin/flipt-operator", "git-sync", "--config", "c"]
    assert IMAGES.command("ghcr.io/x/flipt-operator:1", [], []) == ["/venv/bin/flipt-operator", "run"]
    assert IMAGES.command("docker.flipt.io/flipt/flipt:v2.11.0", ["/flipt", "server"], ["--config", "f"]) == \
        ["python", "-m", "standin", "server", "--config", "f"]
    assert IMAGES.command("docker.flipt.io/flipt/flipt:v1.61.1", [], ["migrate"]) == ["python", "-m", "standin", "migrate"]
    assert IMAGES.command("debian:bookworm", ["sh", "-c"], ["true"]) == ["sh", "-c", "true"]
    assert IMAGES.command("debian:bookworm", [], ["true"]) == ["true"]  # no entrypoint: args run, as Docker does
    with pytest.raises(ImageError, match="give the container a command"):
        IMAGES.command("debian:bookworm", [], [])
    assert IMAGES.default_user("docker.flipt.io/flipt/flipt:v2") == (100, 1000)


def test_variable_expansion_follows_kubernetes():
    env = {"A": "1", "B": "two"}
    assert expand("$(A)-$(B)-$(C)-$$(A)", env) == "1-two-$(C)-$(A)"


def standin(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flipt_operator.devcluster.flipt_standin", *args],
                          capture_output=True, text=True, timeout=30, **kwargs)


def test_the_flipt_standin_refuses_migrate_and_a_missing_or_broken_config(tmp_path):
    res = standin("migrate", "--config", str(tmp_path / "x.yml"))
    assert res.returncode == 2 and "needs the real Flipt binary" in res.stderr
    res = standin("server", "--config", str(tmp_path / "missing.yml"))
    assert res.returncode == 1 and "cannot read the config file" in res.stderr
    broken = tmp_path / "broken.yml"
    broken.write_text("server: [unclosed\n")
    res = standin("server", "--config", str(broken))
    assert res.returncode == 1 and "is not YAML" in res.stderr
    res = standin("server")
    assert res.returncode == 1 and "no --config" in res.stderr


def test_the_flipt_standin_answers_health_only_once_its_config_parses(tmp_path):
    port = free_port()
    config = tmp_path / "default.yml"
    config.write_text(f"server:\n  host: 127.0.0.1\n  http_port: {port}\n")
    proc = subprocess.Popen([sys.executable, "-m", "flipt_operator.devcluster.flipt_standin", "server",
                             "--config", str(config)], stderr=subprocess.PIPE, text=True)
    try:
        def health():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                return resp.status == 200
        wait_for(health, timeout=20, message="stand-in /health")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/namespaces", timeout=2)
        assert err.value.code == 404
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
