"""The git remote examples/ expect, on this machine: what `scripts/sample_git_remote.py` serves for
`scripts/run.sh` and `tests/cluster/test_examples.py` checks. The examples' access token, a
repository with branch `main` for production and `staging` for staging."""

from __future__ import annotations

from pathlib import Path

import yaml

from flipt_operator.clients.git_transport import ACCESS_TOKEN_USERNAME
from tests.support.git_servers import GitHttpServer, RemoteRepo, git, make_bare_repo

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

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


def examples_token() -> str:
    """The access token in examples/credential.yaml's Secret."""
    secret = next(yaml.safe_load_all((EXAMPLES / "credential.yaml").read_text()))
    return secret["stringData"]["token"]


def host_sample_repo(server: GitHttpServer, token: str) -> RemoteRepo:
    """Let `server` accept only `token` (as an access token) and give it the repository `flags`."""
    server.users.clear()
    server.users[ACCESS_TOKEN_USERNAME] = token
    repo = make_bare_repo(server.root, "flags", server.url_for("flags"), {
        "production/default/features.yaml": SAMPLE_FLAGS,
        "staging/default/features.yaml": SAMPLE_FLAGS,
    })  # fmt: skip
    git("branch", "staging", "main", cwd=repo.bare)
    return repo


def examples_pointed_at(remote: str) -> list[dict]:
    """examples/ as they are, with only the storages' git remote replaced."""
    docs = [d for path in sorted(EXAMPLES.glob("*.yaml")) for d in yaml.safe_load_all(path.read_text()) if d]
    for doc in docs:
        if doc["kind"] == "FliptStorage" and "git" in doc.get("spec", {}):
            doc["spec"]["git"]["remote"] = remote
    return docs
