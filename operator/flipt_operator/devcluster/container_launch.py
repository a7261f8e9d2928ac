"""Start one container of the local node: `python -m flipt_operator.devcluster.container_launch SPEC`.

Runs as root, then becomes the container's process (exec). In order: join the pod's network
namespace, enter a new private mount (and UTS) namespace, build a root file system that is the
host's own `/` under a throw-away overlay (writes land on a tmpfs; the host's files are never
changed), bind each volume at its `mountPath` (a `subPath` file as a file), make the root
read-only when the container asks for it, chroot, drop to the pod's user and groups, and exec the
command with exactly the container's environment.

The spec is JSON written by the node (see `pod_runner.ContainerSpec.to_launch`).
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWNET = 0x40000000
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_libc = ctypes.CDLL("libc.so.6", use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(*args: str) -> None:
    res = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise OSError(f"mount {' '.join(args)}: {res.stderr.strip()}")


def _join_netns(name: str) -> None:
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        _check(_libc.setns(fd, CLONE_NEWNET), f"setns {name}")
    finally:
        os.close(fd)


def _inside(root: Path, path: str) -> Path:
    return root / path.lstrip("/")


def _allow_traverse(root: Path, paths: list[str]) -> None:
    """The container's user must reach the interpreter and the package (which may sit under a
    0700 home directory): add o+x to their ancestors, in the overlay only."""
    for path in paths:
        for ancestor in Path(path).parents:
            target = _inside(root, str(ancestor))
            try:
                mode = target.stat().st_mode
                if not mode & 0o001:
                    target.chmod((mode & 0o7777) | 0o001)
            except OSError:
                pass


def build_root(spec: dict) -> Path:
    work = Path(spec["work_dir"])
    layer, root = work / "layer", work / "root"
    layer.mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    # A tmpfs for the overlay's upper layer: it must not sit inside the lower one (the host's /).
    _mount("-t", "tmpfs", "tmpfs", str(layer))
    (layer / "upper").mkdir()
    (layer / "work").mkdir()
    _mount("-t", "overlay", "overlay", "-o",
           f"lowerdir=/,upperdir={layer / 'upper'},workdir={layer / 'work'}", str(root))
    for special in ("/dev", "/proc", "/sys"):
        _mount("--rbind", special, str(_inside(root, special)))
    _allow_traverse(root, spec.get("traverse", []))
    for mount in spec["mounts"]:
        target = _inside(root, mount["mountPath"])
        if Path(mount["source"]).is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch(exist_ok=True)
        _mount("--bind", mount["source"], str(target))
        if mount.get("readOnly"):
            _mount("-o", "remount,bind,ro", str(target))
    # A volume over an ancestor of the interpreter or this package (a pod's emptyDir at /tmp with
    # the checkout under /tmp, as in a CI clone) would hide them: bind them back on top, read-only.
    for path in spec.get("runtime", []):
        if any(_covers(mount["mountPath"], path) for mount in spec["mounts"]):
            target = _inside(root, path)
            target.mkdir(parents=True, exist_ok=True)
            _mount("--rbind", path, str(target))
            _mount("-o", "remount,bind,ro", str(target))
    if spec.get("readOnlyRootFilesystem"):
        _mount("-o", "remount,ro", str(root))
    return root


def _covers(mount_path: str, path: str) -> bool:
    mounted, inner = Path(mount_path), Path(path)
    return mounted == inner or mounted in inner.parents


def launch(spec: dict) -> None:
    if spec.get("netns"):
        _join_netns(spec["netns"])
    _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWUTS), "unshare")
    _mount("--make-rprivate", "/")
    socket.sethostname(spec["hostname"][:63])
    root = build_root(spec)
    os.chroot(root)
    os.chdir(spec.get("workingDir") or "/")
    user = spec.get("user")
    if user is not None:
        os.setgroups(user["groups"])
        os.setgid(user["gid"])
        os.setuid(user["uid"])
    env = dict(spec["env"])
    env.setdefault("PATH", DEFAULT_PATH)
    env.setdefault("HOSTNAME", spec["hostname"])
    command = spec["command"]
    os.execvpe(command[0], command, env)


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text())
    try:
        launch(spec)
    except OSError as exc:
        print(f"container_launch: {exc}", file=sys.stderr, flush=True)
        return 128
    return 0  # not reached: exec replaced this process


if __name__ == "__main__":
    sys.exit(main())
