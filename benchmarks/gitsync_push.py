"""A write's round trip through the sidecar against the same write pushed straight to upstream, in
the same run: the go-git stand-in for Flipt (`tests/support/gogit_flipt_standin`) commits one file
and pushes it, once to the sidecar (which fetches upstream for the push's ref advertisement, takes
the pack and forwards it before answering) and once with upstream as its own remote (what Flipt
would do without the sidecar). Upstream is `git daemon` on loopback.

Usage: .venv/bin/python benchmarks/gitsync_push.py [--writes 20]
Target (issue 11): sidecar / direct <= 1.3, median of the writes.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time

from gitsync_common import Sidecar, start_daemon, storage, workdir

from tests.support.gogit_standin import GoGitFliptStandin, standin_binary
from tests.support.waiting import wait_for


def timed_write(client: GoGitFliptStandin, n: int) -> float:
    started = time.monotonic()
    result = client.write(f"default/flag-{n % 5}.yaml", f"flags: [{n}]\n")
    seconds = time.monotonic() - started
    assert result.code == 0 and result.attempts == 1, result
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--writes", type=int, default=20)
    args = parser.parse_args()
    binary = standin_binary()
    work = workdir()
    daemon = start_daemon(work)
    sidecar: Sidecar | None = None
    try:
        via, direct = daemon.create_repo("via"), daemon.create_repo("direct")
        sidecar = Sidecar(work, [storage(work, "via", via.url, "30s")]).start().wait_up()
        wait_for(lambda: sidecar.get("/readyz")[0] == 200, timeout=30, message="sidecar ready")
        through = GoGitFliptStandin(binary, work / "flipt-via", sidecar.git_url("via"))
        straight = GoGitFliptStandin(binary, work / "flipt-direct", direct.url)
        through.fetch()
        straight.fetch()
        ratios, via_times, direct_times = [], [], []
        for n in range(args.writes):  # interleaved, so both see the same machine load
            via_times.append(timed_write(through, n))
            direct_times.append(timed_write(straight, n))
            ratios.append(via_times[-1] / direct_times[-1])
        assert via.head() is not None and via.head() == through.fetch()
        print(f"{args.writes} writes, one file each; each time includes the stand-in's process start")
        print(f"through the sidecar: median {statistics.median(via_times) * 1000:.0f} ms, "
              f"max {max(via_times) * 1000:.0f} ms")  # fmt: skip
        print(f"straight to upstream: median {statistics.median(direct_times) * 1000:.0f} ms, "
              f"max {max(direct_times) * 1000:.0f} ms")  # fmt: skip
        median = statistics.median(ratios)
        print(f"median ratio sidecar/direct: {median:.2f} -> {'met' if median <= 1.3 else 'MISSED'} (target <= 1.3)")
    finally:
        if sidecar is not None:
            sidecar.stop()
        daemon.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
