"""Peak memory (VmHWM) of a real sidecar process whose upstream holds one big blob.

Usage: .venv/bin/python benchmarks/gitsync_big_blob.py [--blob-mb 200]

Baselines from the same run: the same sidecar on the same repository without the blob, and
`git fetch` of the repository with the blob (peak RSS of git and its children, e.g. index-pack).
Target: the sidecar's peak with the blob stays within 1.5x its peak without it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time

from gitsync_common import Sidecar, start_daemon, status, storage, workdir


def vm_hwm_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def sidecar_peak(work, name: str, remote: str) -> tuple[float, float]:  # noqa: ANN001
    """Start a sidecar on one storage, wait until it has published; (peak MB, seconds)."""
    sidecar = Sidecar(work, [storage(work, name, remote, "60s")]).start()
    started = time.monotonic()
    try:
        sidecar.wait_up()
        while not status(sidecar)["storages"][0].get("ready"):
            if time.monotonic() - started > 600:
                raise RuntimeError(f"sidecar did not sync: {status(sidecar)}")
            time.sleep(0.1)
        took = time.monotonic() - started
        assert sidecar.process is not None
        return vm_hwm_mb(sidecar.process.pid), took
    finally:
        sidecar.stop()


def git_fetch_peak(work, remote: str) -> tuple[float, float]:  # noqa: ANN001
    """`git fetch` into an empty repository; peak RSS over git and its children (MB), seconds."""
    target = work / "git-fetch"
    subprocess.run(["git", "init", "-q", "--bare", str(target)], check=True)
    probe = (
        "import resource, subprocess, sys, time\n"
        "t = time.monotonic()\n"
        "subprocess.run(sys.argv[1:], check=True)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, time.monotonic() - t)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, "git", "-C", str(target), "fetch", "-q", remote, "main:main"],
        check=True, capture_output=True, text=True,
    ).stdout.split()  # fmt: skip
    return float(out[0]), float(out[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--blob-mb", type=int, default=200)
    args = parser.parse_args()
    work = workdir()
    daemon = start_daemon(work)
    try:
        files = {f"ns{i}/features.yaml": f"namespace: ns{i}\nflags: []\n" for i in range(20)}
        small = daemon.create_repo("small", files)
        big = daemon.create_repo("big", files)
        blob = work / "blob.bin"
        with open(blob, "wb") as f:  # incompressible, as a binary asset would be
            for _ in range(args.blob_mb):
                f.write(os.urandom(1024 * 1024))
        seed = work / "seed"
        subprocess.run(["git", "clone", "-q", str(big.bare), str(seed)], check=True)
        shutil.move(str(blob), seed / "asset.bin")
        env = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@x", "GIT_COMMITTER_NAME": "b",
               "GIT_COMMITTER_EMAIL": "b@x"}  # fmt: skip
        subprocess.run(["git", "-C", str(seed), "add", "asset.bin"], check=True, env=env)
        subprocess.run(["git", "-C", str(seed), "commit", "-qm", "big asset"], check=True, env=env)
        subprocess.run(["git", "-C", str(seed), "push", "-q", "origin", "HEAD:main"], check=True, env=env)
        shutil.rmtree(seed)

        git_peak, git_seconds = git_fetch_peak(work, big.url)
        base_peak, base_seconds = sidecar_peak(work, "small", small.url)
        peak, seconds = sidecar_peak(work, "big", big.url)
        print(f"upstream with one {args.blob_mb} MB blob (incompressible)")
        print(f"sidecar first sync:   VmHWM {peak:6.1f} MB in {seconds:5.1f}s")
        print(f"same, without blob:   VmHWM {base_peak:6.1f} MB in {base_seconds:5.1f}s")
        print(f"git fetch (+children): max RSS {git_peak:6.1f} MB in {git_seconds:5.1f}s")
        ratio = peak / base_peak
        print(f"sidecar with blob / without: {ratio:.2f} -> {'met' if ratio <= 1.5 else 'MISSED'} (target <= 1.5)")
        print(f"sidecar with blob / git fetch: {peak / git_peak:.2f}; time ratio {seconds / git_seconds:.2f}")
    finally:
        daemon.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
