"""Resident memory of one sidecar serving 10 storages, after they have synced and polled a while.

Usage: .venv/bin/python benchmarks/gitsync_memory.py [--storages 10] [--interval 0.5s] [--cycles 20]
Target: <= 100 MB. The baseline is a bare Python interpreter in the same run.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time

from gitsync_common import Sidecar, rss_mb, start_daemon, status, storage, workdir


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--storages", type=int, default=10)
    parser.add_argument("--interval", default="0.5s")
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    work = workdir()
    daemon = start_daemon(work)
    repos = [daemon.create_repo(f"flags{i}", {f"ns{j}/features.yaml": f"flags: [{j}]\n" for j in range(200)})
             for i in range(args.storages)]  # fmt: skip
    sidecar = Sidecar(work, [storage(work, f"s{i}", r.url, args.interval) for i, r in enumerate(repos)]).start()
    baseline = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        sidecar.wait_up()
        while not all(s.get("ready") for s in status(sidecar)["storages"]):
            time.sleep(0.1)
        peak = 0.0
        deadline = time.monotonic() + args.seconds
        n = 0
        while time.monotonic() < deadline:  # keep the storages busy: commits arrive and are published
            repos[n % len(repos)].commit({f"ns{n % 200}/features.yaml": f"flags: [{n}]\n"})
            n += 1
            assert sidecar.process is not None
            peak = max(peak, rss_mb(sidecar.process.pid))
            time.sleep(0.2)
        assert sidecar.process is not None
        current = rss_mb(sidecar.process.pid)
        base = rss_mb(baseline.pid)
        print(f"{args.storages} storages, poll {args.interval}, {n} remote commits over {args.seconds:.0f}s")
        print(f"sidecar RSS now {current:.1f} MB, peak {peak:.1f} MB; bare python {base:.1f} MB "
              f"(ratio {peak / base:.1f}x)")
        print(f"peak / target (100 MB): {peak / 100:.2f} -> {'met' if peak <= 100 else 'MISSED'}")
    finally:
        baseline.kill()
        baseline.wait()
        sidecar.stop()
        daemon.stop()
        for r in repos:
            r.cleanup()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
