"""One incremental fetch of 10 new commits into a clone of a large repository, sidecar (dulwich)
against `git fetch` of the same change in the same run, both over git:// from `git daemon`.

Usage: .venv/bin/python benchmarks/gitsync_fetch.py [--commits 10000] [--files 5000] [--new 10]
Target: sidecar / git <= 2.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import time

from gitsync_common import start_daemon, workdir

from flipt_operator.clients.git import MirrorRepository
from flipt_operator.clients.git_transport import open_remote
from flipt_operator.models.gitsync import GitSyncStorage
from tests.support.git_servers import GIT_ENV, git


def fast_import_stream(commits: int, files: int) -> bytes:
    """The first commit adds `files` files; each later commit changes one of them."""
    out: list[bytes] = []
    stamp = 1_700_000_000
    for n in range(commits):
        out.append(b"commit refs/heads/main\n")
        out.append(b"committer Bench <bench@example.com> %d +0000\n" % (stamp + n))
        message = b"commit %d" % n
        out.append(b"data %d\n%s\n" % (len(message), message))
        changed = range(files) if n == 0 else [n % files]
        for f in changed:
            content = b"namespace: ns%d\nflags:\n- key: flag-%d\n  version: %d\n" % (f % 50, f, n)
            out.append(b"M 100644 inline ns%d/flags-%d.yaml\ndata %d\n%s\n" % (f % 50, f, len(content), content))
    return b"".join(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--commits", type=int, default=10_000)
    parser.add_argument("--files", type=int, default=5_000)
    parser.add_argument("--new", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = workdir()
    daemon = start_daemon(work)
    try:
        bare = daemon.root / "big.git"
        git("init", "-q", "--bare", "-b", "main", str(bare))
        started = time.monotonic()
        subprocess.run(["git", "fast-import", "--quiet"], cwd=bare, input=fast_import_stream(args.commits, args.files),
                       check=True, env={**GIT_ENV, "PATH": "/usr/bin:/bin"})  # fmt: skip
        git("repack", "-adq", cwd=bare)
        print(f"generated {args.commits} commits x {args.files} files in {time.monotonic() - started:.1f}s")
        url = f"{daemon.base_url}/big.git"
        storage = GitSyncStorage(name="big", remote=url, repository_path=str(work / "sidecar"))
        repo = MirrorRepository(storage.repository_path, "main")
        repo.open()
        started = time.monotonic()
        access = open_remote(storage)
        first = repo.fetch(access)
        access.close()
        repo.publish(first.heads)
        print(f"sidecar initial clone {time.monotonic() - started:.1f}s")
        git("clone", "-q", "--bare", url, str(work / "gitclone.git"))
        writer = work / "writer"
        git("clone", "-q", str(bare), str(writer))
        ratios = []
        for round_ in range(args.rounds):
            for i in range(args.new):
                (writer / f"ns{i}" / f"flags-{i}.yaml").write_text(f"round {round_} change {i}\n")
                git("commit", "-qam", f"new {round_}.{i}", cwd=writer)
            git("push", "-q", "origin", "main", cwd=writer)
            started = time.monotonic()
            git("fetch", "-q", url, "+refs/heads/main:refs/heads/main", cwd=work / "gitclone.git")
            git_seconds = time.monotonic() - started
            started = time.monotonic()
            access = open_remote(storage)
            result = repo.fetch(access)
            access.close()
            head = result.heads.get("refs/heads/main")
            assert head is not None
            repo.publish(result.heads)  # git fetch updates its ref too
            sidecar_seconds = time.monotonic() - started
            assert result.received_objects and head == git("rev-parse", "main", cwd=bare)
            ratios.append(sidecar_seconds / git_seconds)
            print(f"round {round_}: {args.new} new commits: sidecar fetch {sidecar_seconds * 1000:.0f} ms, "
                  f"git fetch {git_seconds * 1000:.0f} ms, ratio {ratios[-1]:.2f}")  # fmt: skip
        median = statistics.median(ratios)
        print(f"median ratio sidecar/git: {median:.2f} -> {'met' if median <= 2 else 'MISSED'} (target <= 2)")
        repo.close()
    finally:
        daemon.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
