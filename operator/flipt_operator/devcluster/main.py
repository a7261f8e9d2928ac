"""`flipt-operator dev-cluster {build,tools,start,stop,status,node}`: a local Kubernetes for development."""

from __future__ import annotations

import argparse
import hashlib
import shlex
import sys
from pathlib import Path

from .build import CURRENT_KUBERNETES, RELEASES, BuildError, build_kubernetes
from .cluster import ClusterError, ClusterState, LocalCluster
from .paths import default_state_dir, file_lock
from .tools import ToolsError, install_tools


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="dev_command", required=True)
    b = sub.add_parser("build", help=f"build the control planes of Kubernetes {' and '.join(RELEASES)} from Go modules "
                                     "(once each; cached)")
    b.add_argument("--release", choices=RELEASES, action="append",
                   help="build only this release (repeatable; default: all)")
    b.add_argument("--force", action="store_true", help="rebuild even if the cached binary works")
    n = sub.add_parser("node", help="run a local node (a small kubelet: pods as processes in their own "
                                    "mount and network namespaces) until SIGTERM; needs root")
    n.add_argument("--kubeconfig", type=Path, required=True, help="the cluster's admin kubeconfig")
    n.add_argument("--name", default="local-node", help="the Node's name")
    n.add_argument("--state-dir", type=Path, required=True,
                   help="pod directories, claim volumes and container logs (logs/) live here")
    t = sub.add_parser("tools", help="extract the pinned kubectl and helm into the cache; print the dir")
    t.add_argument("--force", action="store_true", help="extract again")
    for name, text in (
        ("start", "start etcd + kube-apiserver in the background (reuses a running one)"),
        ("stop", "stop the background cluster by its process ids"),
        ("status", "say whether the background cluster answers /readyz"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--state-dir", type=Path, default=None,
                       help="where kubeconfig, logs and pids live (default: <cache>/dev-cluster)")
        if name == "start":
            p.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for /readyz")
            p.add_argument("--release", choices=RELEASES, default=CURRENT_KUBERNETES,
                           help="the Kubernetes release (default %(default)s; v1.28.15 is the last before native "
                                "sidecars)")
            p.add_argument("--pods", action="store_true",
                           help="with the release's controller-manager, scheduler and a local node that runs pods "
                                "(needs root), instead of the API server alone")


def _err(msg: str) -> int:
    print(f"dev-cluster: {msg}", file=sys.stderr)
    return 1


def _start(state_dir: Path, timeout: float, release: str, pods: bool) -> int:
    build_kubernetes(release)
    # one start at a time per state dir, so two concurrent starts share one cluster
    with file_lock("dev-cluster-" + hashlib.sha256(str(state_dir).encode()).hexdigest()[:12]):
        return _start_locked(state_dir, timeout, release, pods)


def _start_locked(state_dir: Path, timeout: float, release: str, pods: bool) -> int:
    state = ClusterState.load(state_dir)
    if state is not None:
        if state.running():
            print(f"# reusing the cluster at {state.server}", file=sys.stderr)
            print(f"export KUBECONFIG={shlex.quote(state.kubeconfig)}")
            return 0
        print("# cleaning up a stale cluster", file=sys.stderr)
        state.stop()
    cluster = LocalCluster(workdir=state_dir, detached=True, start_timeout=timeout, release=release,
                           controllers=pods).start()
    if pods:
        from .pod_runner import start_node_process

        assert cluster.kubeconfig is not None
        try:
            node = start_node_process(cluster.kubeconfig, state_dir / "node", detached=True)
        except BaseException:
            cluster.stop()
            raise
        cluster.record_node(node.process.pid)
        print(f"# local node {node.name} at {node.host_ip} (pid {node.process.pid}): pods reach this "
              f"machine at {node.host_ip}; container logs in {node.container_logs}", file=sys.stderr)
    print(f"# kube-apiserver {release} {cluster.server} (pids {cluster.pids}); logs in {state_dir}", file=sys.stderr)
    print(f"export KUBECONFIG={shlex.quote(str(cluster.kubeconfig))}")
    return 0


def main(args: argparse.Namespace) -> int:
    try:
        if args.dev_command == "build":
            for release in args.release or RELEASES:
                for path in build_kubernetes(release, force=args.force).values():
                    print(path)
            return 0
        if args.dev_command == "node":
            from .pod_runner import run_node

            return run_node(args.kubeconfig, args.name, args.state_dir)
        if args.dev_command == "tools":
            print(install_tools(force=args.force))
            return 0
        state_dir = (args.state_dir or default_state_dir()).expanduser().resolve()
        if args.dev_command == "start":
            return _start(state_dir, args.timeout, args.release, args.pods)
        state = ClusterState.load(state_dir)
        if args.dev_command == "stop":
            if state is None:
                print(f"no cluster state in {state_dir}", file=sys.stderr)
                return 0
            state.stop()
            print(f"stopped (pids {state.apiserver_pid}, {state.etcd_pid}"
                  f"{', node ' + str(state.node_pid) if state.node_pid else ''})", file=sys.stderr)
            return 0
        if args.dev_command == "status":
            if state is not None and state.running():
                print(f"running: {state.server} (pids {state.apiserver_pid}, {state.etcd_pid})")
                print(f"export KUBECONFIG={shlex.quote(state.kubeconfig)}")
                return 0
            print("not running" + (" (stale state; `dev-cluster stop` cleans up)" if state else ""))
            return 3
    except (BuildError, ClusterError, ToolsError) as exc:
        return _err(str(exc))
    return _err(f"unknown command {args.dev_command}")
