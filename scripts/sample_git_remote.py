"""A git remote for `scripts/run.sh` on the local cluster: `git http-backend` behind basic auth
(the test suite's server), listening where the local node's pods reach this machine, with a small
flag repository: branch `main` for production and `staging` for staging, as in examples/.

Usage: .venv/bin/python scripts/sample_git_remote.py --host ADDRESS --root DIR --token-file FILE
Prints `url=<repository URL>` once it serves, then serves until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.git_servers import _start_http_server  # noqa: E402
from tests.support.sample_remote import host_sample_repo  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True, help="address to listen on (the local node's host address)")
    parser.add_argument("--root", required=True, type=Path, help="an empty directory for the repositories")
    parser.add_argument("--token-file", required=True, type=Path, help="the access token the server accepts")
    args = parser.parse_args()
    server, handle = _start_http_server(args.root, None, args.host)
    host_sample_repo(handle, args.token_file.read_text().strip())
    print(f"url={handle.url_for('flags')}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
