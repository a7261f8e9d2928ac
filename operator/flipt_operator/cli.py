"""The `flipt-operator` command: one entry point for the operator, the sidecar and dev tools.

Each subcommand's module is imported only when it runs, so the sidecar image path
never loads kopf and the operator never loads the sidecar's server.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module with add_arguments(parser) and main(args) -> int, help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("flipt_operator.handlers.main", "run the operator (kopf) against the current kubeconfig"),
    "git-sync": ("flipt_operator.gitsync.main", "run the git-sync sidecar"),
    "crds": ("flipt_operator.builders.crd_cli", "generate crds/*.yaml from the models"),
    "docs": ("flipt_operator.builders.reference_docs", "generate docs/reference/<kind>.md from the models"),
    "dev-cluster": ("flipt_operator.devcluster.main", "build and run a local kube-apiserver + etcd"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="flipt-operator", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    chosen = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    modules = {}
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_text)
        if name == chosen:
            modules[name] = importlib.import_module(module_name)
            modules[name].add_arguments(sp)
    args = parser.parse_args(argv)
    return int(modules[args.command].main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
