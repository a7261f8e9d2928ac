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

from flipt_operator.clients.git_transport import ACCESS_TOKEN_USERNAME  # noqa: E402
from tests.support.git_servers import _start_http_server, git, make_bare_repo  # noqa: E402

# Files are <environment directory>/<namespace>/features.yaml (examples/environments.yaml).
SAMPLE_FLAGS = """\
version: "1.4"
namespace:
  key: default
flags:
  - key: new-checkout
    name: New checkout
    type: BOOLEAN_FLAG_TYPE
    enabled: false
"""


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True, help="address to listen on (the local node's host address)")
    parser.add_argument("--root", required=True, type=Path, help="an empty directory for the repositories")
    parser.add_argument("--token-file", required=True, type=Path, help="the access token the server accepts")
    args = parser.parse_args()
    server, handle = _start_http_server(args.root, None, args.host)
    server.users = {ACCESS_TOKEN_USERNAME: args.token_file.read_text().strip()}
    repo = make_bare_repo(args.root, "flags", handle.url_for("flags"), {
        "production/default/features.yaml": SAMPLE_FLAGS,
        "staging/default/features.yaml": SAMPLE_FLAGS,
    })  # fmt: skip
    git("branch", "staging", "main", cwd=repo.bare)
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
