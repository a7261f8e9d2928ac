"""Build kube-apiserver 1.20 from Debian bookworm's `kubernetes` source package, once per machine.

Debian's source package vendors every Go dependency, so it builds offline with Debian's
Go 1.19, except that the vendored reflect2 1.0.1 crashes on Go >= 1.18; it is replaced by
Debian's reflect2 1.0.2. The binary is cached under `cache_dir()/bin/kube-apiserver`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .paths import bin_dir, cache_dir, file_lock

REQUIRED_PACKAGES = ("etcd-server", "golang-1.19-go", "rsync", "golang-github-modern-go-reflect2-dev", "dpkg-dev")
# The vendored tree builds with Debian's Go 1.19 only (newer Go refuses parts of it), whatever
# `go` comes first on PATH (the machines have a current Go in /usr/local/go).
DEBIAN_GO_BIN = Path("/usr/lib/go-1.19/bin")
SOURCES_FILE = Path("/etc/apt/sources.list.d/debian.sources")
SOURCES_SRC_FILE = Path("/etc/apt/sources.list.d/debian-src.sources")
REFLECT2_SRC = Path("/usr/share/gocode/src/github.com/modern-go/reflect2")
SOURCE_PACKAGE = "kubernetes"


class BuildError(RuntimeError):
    """The kube-apiserver build (or a prerequisite) failed; the message says what to do."""


def apiserver_path() -> Path:
    return bin_dir() / "kube-apiserver"


def binary_works(path: Path) -> bool:
    if not path.is_file() or not os.access(path, os.X_OK):
        return False
    try:
        res = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return res.returncode == 0 and "Kubernetes" in res.stdout


def missing_packages(packages: tuple[str, ...] = REQUIRED_PACKAGES) -> list[str]:
    missing = []
    for pkg in packages:
        res = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True, check=False
        )
        if res.returncode != 0 or "install ok installed" not in res.stdout:
            missing.append(pkg)
    return missing


def check_packages(packages: tuple[str, ...] = REQUIRED_PACKAGES) -> None:
    if shutil.which("dpkg-query") is None:
        raise BuildError("dpkg-query not found: building kube-apiserver needs a Debian (bookworm) machine")
    missing = missing_packages(packages)
    if missing:
        raise BuildError(
            f"missing Debian package(s): {', '.join(missing)}; run scripts/bootstrap.sh "
            f"(or: apt-get install {' '.join(missing)})"
        )


def _log(msg: str) -> None:
    print(f"dev-cluster build: {msg}", file=sys.stderr, flush=True)


def _run(cmd: list[str], **kwargs) -> None:
    _log("$ " + " ".join(cmd))
    res = subprocess.run(cmd, check=False, **kwargs)
    if res.returncode != 0:
        raise BuildError(f"command failed ({res.returncode}): {' '.join(cmd)}")


def ensure_deb_src() -> bool:
    """Write a deb-src copy of debian.sources if it is missing. True when written (apt needs an update)."""
    if SOURCES_SRC_FILE.exists():
        return False
    if not SOURCES_FILE.exists():
        raise BuildError(f"{SOURCES_FILE} not found: cannot derive deb-src entries for `apt-get source`")
    lines = []
    for line in SOURCES_FILE.read_text().splitlines():
        if line.strip().startswith("Types:"):
            line = "Types: deb-src"
        lines.append(line)
    try:
        SOURCES_SRC_FILE.write_text("\n".join(lines) + "\n")
    except PermissionError as exc:
        raise BuildError(f"cannot write {SOURCES_SRC_FILE} (needs root): {exc}") from exc
    _log(f"wrote {SOURCES_SRC_FILE}")
    return True


def _download_source(workdir: Path, apt_update: bool) -> Path:
    if apt_update:
        _run(["apt-get", "update", "-qq"])
    cmd = ["apt-get", "source", "--download-only", SOURCE_PACKAGE]
    try:
        _run(cmd, cwd=workdir)
    except BuildError:
        if apt_update:
            raise
        _run(["apt-get", "update", "-qq"])
        _run(cmd, cwd=workdir)
    origs = sorted(workdir.glob(f"{SOURCE_PACKAGE}_*.orig.tar.*"))
    if not origs:
        raise BuildError(f"no {SOURCE_PACKAGE}_*.orig.tar.* in {workdir} after apt-get source")
    return origs[0]


def _unpack(orig: Path, workdir: Path) -> Path:
    src = workdir / "src"
    src.mkdir()
    _run(["tar", "-xf", str(orig), "-C", str(src)])
    entries = [p for p in src.iterdir() if p.is_dir()]
    tree = entries[0] if len(entries) == 1 else src
    if not (tree / "cmd" / "kube-apiserver").is_dir():
        raise BuildError(f"unexpected source layout: no cmd/kube-apiserver under {tree}")
    return tree


def _replace_reflect2(tree: Path) -> None:
    vendored = tree / "vendor" / "github.com" / "modern-go" / "reflect2"
    if not REFLECT2_SRC.is_dir():
        raise BuildError(f"{REFLECT2_SRC} not found; install golang-github-modern-go-reflect2-dev")
    shutil.rmtree(vendored, ignore_errors=True)
    shutil.copytree(REFLECT2_SRC, vendored, symlinks=False)
    (vendored / "go.mod").unlink(missing_ok=True)
    (vendored / "go.sum").unlink(missing_ok=True)


def _make(tree: Path) -> Path:
    gopath = tree / ".go"
    (gopath / "src" / "k8s.io").mkdir(parents=True, exist_ok=True)
    link = gopath / "src" / "k8s.io" / "kubernetes"
    if not link.exists():
        link.symlink_to(Path("..", "..", ".."))
    env = dict(
        os.environ,
        PATH=f"{DEBIAN_GO_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        GOROOT=str(DEBIAN_GO_BIN.parent),
        GOTOOLCHAIN="local",
        GOFLAGS="",
        GOPATH=str(gopath),
        CGO_ENABLED="0",
    )
    _run(["make", "WHAT=cmd/kube-apiserver"], cwd=tree, env=env)
    built = tree / "_output" / "bin" / "kube-apiserver"
    if not built.is_file():
        found = list((tree / "_output").rglob("kube-apiserver"))
        if not found:
            raise BuildError("make finished but no _output/**/kube-apiserver was produced")
        built = found[0]
    return built


def build_apiserver(force: bool = False) -> Path:
    """Return the cached kube-apiserver, building it first when it is missing or broken."""
    target = apiserver_path()
    if not force and binary_works(target):
        return target
    with file_lock("build-kube-apiserver"):
        if not force and binary_works(target):  # another process built it while we waited
            return target
        check_packages()
        wrote = ensure_deb_src()
        with tempfile.TemporaryDirectory(prefix="kube-build-", dir=cache_dir()) as tmp:
            workdir = Path(tmp)
            orig = _download_source(workdir, apt_update=wrote)
            _log(f"unpacking {orig.name}")
            tree = _unpack(orig, workdir)
            _replace_reflect2(tree)
            _log("building cmd/kube-apiserver (a few minutes)")
            built = _make(tree)
            staging = target.with_suffix(".new")
            shutil.copy2(built, staging)
            staging.chmod(0o755)
            os.replace(staging, target)
        if not binary_works(target):
            raise BuildError(f"built {target} but `--version` does not run")
    return target


# -- a current Kubernetes, built from the Go module proxy -------------------------------------------

# The release pinned by kubernetes_module/go.mod (its staging modules at the matching v0.x).
CURRENT_KUBERNETES = "v1.35.4"
KUBERNETES_MODULE = Path(__file__).with_name("kubernetes_module")
# The machines' own Go (1.26); the module needs Go >= 1.25, which Debian's 1.19 is not.
CURRENT_GO = Path("/usr/local/go/bin/go")


# The control plane the dev cluster runs from that release; one `go build` compiles all three, so
# the packages they share are compiled once.
CURRENT_COMPONENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")


def current_binary_path(component: str) -> Path:
    return bin_dir() / f"kubernetes-{CURRENT_KUBERNETES}" / component


def current_apiserver_path() -> Path:
    return current_binary_path("kube-apiserver")


def _version_ldflags(version: str) -> str:
    """What Kubernetes' own build stamps into the binary, so /version reports the release."""
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
    if CURRENT_GO.is_file():
        return str(CURRENT_GO)
    found = shutil.which("go")
    if found is None:
        raise BuildError("no Go toolchain: the current kube-apiserver is built from Go modules (Go >= 1.25)")
    return found


def _current_built() -> bool:
    return all(binary_works(current_binary_path(c)) for c in CURRENT_COMPONENTS)


def build_current_kubernetes(force: bool = False) -> dict[str, Path]:
    """Return the cached kube-apiserver, kube-controller-manager and kube-scheduler of
    CURRENT_KUBERNETES, building them from the Go module proxy first (about 2 minutes of downloads
    and 15 CPU-minutes of compiling)."""
    paths = {c: current_binary_path(c) for c in CURRENT_COMPONENTS}
    if not force and _current_built():
        return paths
    # The lock name predates the controller-manager and scheduler: an older checkout's build of the
    # apiserver alone waits for this one instead of compiling the same packages beside it.
    with file_lock("build-kube-apiserver-current"):
        if not force and _current_built():
            return paths
        target_dir = current_apiserver_path().parent
        target_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="kube-module-", dir=cache_dir()) as tmp:
            module = Path(tmp) / "module"
            shutil.copytree(KUBERNETES_MODULE, module)
            env = dict(
                os.environ,
                GOTOOLCHAIN="local",
                GOFLAGS="-mod=readonly -buildvcs=false",
                CGO_ENABLED="0",
            )
            env.pop("GOROOT", None)
            _log(f"building {', '.join(CURRENT_COMPONENTS)} {CURRENT_KUBERNETES} from Go modules "
                 "(about 15 CPU-minutes the first time)")
            staging = Path(tmp) / "out"
            staging.mkdir()
            _run([_go(), "build", "-trimpath", "-ldflags", _version_ldflags(CURRENT_KUBERNETES),
                  "-o", f"{staging}{os.sep}", *(f"k8s.io/kubernetes/cmd/{c}" for c in CURRENT_COMPONENTS)],
                 cwd=module, env=env)
            for component, target in paths.items():
                built = staging / component
                built.chmod(0o755)
                os.replace(built, target)
        for target in paths.values():
            if not binary_works(target):
                raise BuildError(f"built {target} but `--version` does not run")
    return paths


def build_current_apiserver(force: bool = False) -> Path:
    """The cached current kube-apiserver (built with its controller-manager and scheduler)."""
    return build_current_kubernetes(force)["kube-apiserver"]
