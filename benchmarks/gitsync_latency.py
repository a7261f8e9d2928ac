"""Latency from a commit landing on the remote to its publication by the sidecar.

Usage: .venv/bin/python benchmarks/gitsync_latency.py [--interval 1s] [--commits 10]
Target: every latency <= poll interval + 0.5 s.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import time

from gitsync_common import Sidecar, start_daemon, status, storage, workdir

from flipt_operator.models.common import parse_duration


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--interval", default="1s")
    parser.add_argument("--commits", type=int, default=10)
    args = parser.parse_args()
    interval = parse_duration(args.interval)
    work = workdir()
    daemon = start_daemon(work)
    remote = daemon.create_repo()
    sidecar = Sidecar(work, [storage(work, "flags", remote.url, args.interval)]).start().wait_up()
    try:
        while status(sidecar)["storages"][0].get("revision") != remote.head():
            time.sleep(0.01)
        latencies = []
        for i in range(args.commits):
            time.sleep(random.uniform(0, interval))  # land at a random point of the poll cycle
            sha = remote.commit({f"f{i}.yaml": f"{i}\n"})
            landed = time.monotonic()
            while status(sidecar)["storages"][0].get("revision") != sha:
                time.sleep(0.005)
            latencies.append(time.monotonic() - landed)
        target = interval + 0.5
        print(f"poll interval {interval:.2f}s, {len(latencies)} commits")
        print(f"latency median {statistics.median(latencies):.3f}s, p90 "
              f"{sorted(latencies)[int(0.9 * len(latencies)) - 1]:.3f}s, max {max(latencies):.3f}s")
        print(f"max / target (interval + 0.5 s = {target:.2f}s): {max(latencies) / target:.2f} "
              f"-> {'met' if max(latencies) <= target else 'MISSED'}")
    finally:
        sidecar.stop()
        daemon.stop()
        remote.cleanup()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
