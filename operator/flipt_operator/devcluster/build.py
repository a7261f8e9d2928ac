"""Build the dev cluster's Kubernetes control planes from the Go module proxy, once per machine.

Each release is a small Go module of the project's own under `kubernetes_modules/<release>/`
(`go.mod`, `go.sum`, `tools.go`): it requires `k8s.io/kubernetes` at that release and replaces its
staging modules (`k8s.io/api`, ...; the release's own go.mod points them at folders a module
download does not contain) with their published `v0.<minor>.<patch>`. One `go build` compiles
kube-apiserver, kube-controller-manager and kube-scheduler with the machine's Go; the binaries are
cached under `bin_dir()/kubernetes-<release>/`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .paths import bin_dir, cache_dir, file_lock

# The release the dev cluster and the tests run by default (native sidecars, CEL rules in CRDs).
CURRENT_KUBERNETES = "v1.35.4"
# The last release before native sidecars (on by default from 1.29): the operator's fallback path
# (`git-sync --once` as an init container, the sidecar a regular container) runs on it.
FALLBACK_KUBERNETES = "v1.28.15"
RELEASES = (CURRENT_KUBERNETES, FALLBACK_KUBERNETES)
KUBERNETES_MODULES = Path(__file__).with_name("kubernetes_modules")
# The machines' own Go (1.26); v1.35 needs Go >= 1.25, and v1.28 builds with it too.
MACHINE_GO = Path("/usr/local/go/bin/go")
# The control plane of a release; one `go build` compiles all three, so the packages they share
# are compiled once.
COMPONENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
# One build at a time, whatever the release: each takes about 2 GB and both cores. The name is the
# one from when only the current apiserver was built, so an older checkout waits for this build
# rather than compiling the same packages beside it.
BUILD_LOCK = "build-kube-apiserver-current"


class BuildError(RuntimeError):
    """A control-plane build (or a prerequisite) failed; the message says what to do."""


def binary_works(path: Path) -> bool:
    if not path.is_file() or not os.access(path, os.X_OK):
        return False
    try:
        res = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return res.returncode == 0 and "Kubernetes" in res.stdout


def binary_path(component: str, release: str = CURRENT_KUBERNETES) -> Path:
    return bin_dir() / f"kubernetes-{release}" / component


def _log(msg: str) -> None:
    print(f"dev-cluster build: {msg}", file=sys.stderr, flush=True)


def _run(cmd: list[str], **kwargs) -> None:
    _log("$ " + " ".join(cmd))
    res = subprocess.run(cmd, check=False, **kwargs)
    if res.returncode != 0:
        raise BuildError(f"command failed ({res.returncode}): {' '.join(cmd)}")


def _version_ldflags(version: str) -> str:
    """What Kubernetes' own build stamps into the binary, so /version reports the release (the
    operator reads it to choose native sidecars); a module build says `v0.0.0-master` without it."""
    major, minor = version.lstrip("v").split(".")[:2]
    pkg = "k8s.io/component-base/version"
    return " ".join([
        "-s", "-w",
        f"-X {pkg}.gitVersion={version}",
        f"-X {pkg}.gitMajor={major}",
        f"-X {pkg}.gitMinor={minor}",
        f"-X {pkg}.gitTreeState=clean",
        f"-X {pkg}.buildDate=1970-01-01T00:00:00Z",
    ])


def _go() -> str:
    if MACHINE_GO.is_file():
        return str(MACHINE_GO)
    found = shutil.which("go")
    if found is None:
        raise BuildError("no Go toolchain: the dev cluster's Kubernetes is built from Go modules (Go >= 1.25)")
    return found


def _built(release: str) -> bool:
    return all(binary_works(binary_path(c, release)) for c in COMPONENTS)


def build_kubernetes(release: str = CURRENT_KUBERNETES, force: bool = False) -> dict[str, Path]:
    """Return the cached kube-apiserver, kube-controller-manager and kube-scheduler of `release`,
    building them from the Go module proxy first (cold: about 15 minutes and 12 CPU-minutes each
    release, see docs/local-cluster.md)."""
    if release not in RELEASES:
        raise BuildError(f"no module for Kubernetes {release}: the dev cluster builds {', '.join(RELEASES)}")
    paths = {c: binary_path(c, release) for c in COMPONENTS}
    if not force and _built(release):
        return paths
    with file_lock(BUILD_LOCK):
        if not force and _built(release):  # another process built it while we waited
            return paths
        target_dir = binary_path(COMPONENTS[0], release).parent
        target_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="kube-module-", dir=cache_dir()) as tmp:
            module = Path(tmp) / "module"
            shutil.copytree(KUBERNETES_MODULES / release, module)
            env = dict(
                os.environ,
                GOTOOLCHAIN="local",
                GOFLAGS="-mod=readonly -buildvcs=false",  # the committed go.sum pins every module
                CGO_ENABLED="0",
            )
            env.pop("GOROOT", None)
            _log(f"building {', '.join(COMPONENTS)} {release} from Go modules (about 12 CPU-minutes the first time)")
            staging = Path(tmp) / "out"
            staging.mkdir()
            _run([_go(), "build", "-trimpath", "-ldflags", _version_ldflags(release),
                  "-o", f"{staging}{os.sep}", *(f"k8s.io/kubernetes/cmd/{c}" for c in COMPONENTS)],
                 cwd=module, env=env)
            for component, target in paths.items():
                built = staging / component
                built.chmod(0o755)
                os.replace(built, target)
        for target in paths.values():
            if not binary_works(target):
                raise BuildError(f"built {target} but `--version` does not run")
    return paths


def build_apiserver(release: str = CURRENT_KUBERNETES, force: bool = False) -> Path:
    """The cached kube-apiserver of `release` (built with its controller-manager and scheduler)."""
    return build_kubernetes(release, force)["kube-apiserver"]
