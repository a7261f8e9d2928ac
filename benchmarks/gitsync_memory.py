"""Peak memory (VmHWM) of one sidecar serving 10 storages while upstream moves and a Flipt-like
client per storage fetches from it and pushes through it.

Upstream is `git daemon`; the client is the go-git stand-in for Flipt's git client
(`tests/support/gogit_flipt_standin`), since the Flipt binary cannot be built here.

Usage: .venv/bin/python benchmarks/gitsync_memory.py [--storages 10] [--interval 0.5s] [--seconds 20]
Target: <= 100 MB. The baseline is a bare Python interpreter in the same run.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time

from gitsync_common import Sidecar, peak_mb, rss_mb, start_daemon, status, storage, workdir

from tests.support.gogit_standin import GoGitFliptStandin, standin_binary


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--storages", type=int, default=10)
    parser.add_argument("--interval", default="0.5s")
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    binary = standin_binary()
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
        clients = [GoGitFliptStandin(binary, work / f"flipt-s{i}", sidecar.git_url(f"s{i}"))
                   for i in range(args.storages)]  # fmt: skip
        for c in clients:
            c.fetch()
        deadline = time.monotonic() + args.seconds
        n = fetches = writes = 0
        while time.monotonic() < deadline:  # upstream commits, Flipt-like fetches and writes, round robin
            i = n % len(repos)
            repos[i].commit({f"ns{n % 200}/features.yaml": f"flags: [{n}]\n"})
            clients[i].fetch()
            fetches += 1
            if n % 3 == 0:
                result = clients[i].write(f"ns{(n + 100) % 200}/features.yaml", f"flags: [w{n}]\n")
                assert result.code == 0, result
                writes += 1
            n += 1
        assert sidecar.process is not None
        current = rss_mb(sidecar.process.pid)
        peak = peak_mb(sidecar.process.pid)
        base = peak_mb(baseline.pid)
        print(f"{args.storages} storages, poll {args.interval}, over {args.seconds:.0f}s: {n} upstream commits, "
              f"{fetches} client fetches and {writes} client writes through the sidecar")
        print(f"sidecar VmHWM {peak:.1f} MB (VmRSS now {current:.1f} MB); bare python VmHWM {base:.1f} MB "
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
