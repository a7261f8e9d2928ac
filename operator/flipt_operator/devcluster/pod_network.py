"""The local node's pod network: a bridge on the host and a network namespace per pod.

The node owns one /24 of 10.244.0.0/16; the bridge holds its first address (the gateway, which is
also the node's InternalIP), every pod gets the next free one on a veth whose peer is `eth0` in
the pod's namespace. The host reaches pod IPs directly over the bridge; pods reach the host's
services only at the gateway address (the host's 127.0.0.1 is not theirs). Everything is made
with Debian's iproute2 (`ip`), named with a per-node prefix, recorded in a small registry file so
that a later node removes what a killed one left, and removed again on `close()`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .paths import cache_dir, file_lock

POD_SUPERNET = ipaddress.IPv4Network("10.244.0.0/16")
NETNS_DIR = Path("/run/netns")
# Interface names are at most 15 characters: "fobr" / "fov" + 8 hex digits.
BRIDGE_PREFIX = "fobr"
VETH_PREFIX = "fov"
NETNS_PREFIX = "fopod-"


class PodNetworkError(RuntimeError):
    """An `ip` command failed; the message has its output."""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and res.returncode != 0:
        raise PodNetworkError(f"ip {' '.join(args)}: {res.stderr.strip() or res.stdout.strip()}")
    return res


def _registry_dir() -> Path:
    path = cache_dir() / "pod-networks"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _used_subnets() -> set[ipaddress.IPv4Network]:
    used: set[ipaddress.IPv4Network] = set()
    res = ip("-j", "-4", "addr", "show", check=False)
    for link in json.loads(res.stdout or "[]"):
        for addr in link.get("addr_info", []):
            net = ipaddress.ip_network(f"{addr['local']}/{addr['prefixlen']}", strict=False)
            if isinstance(net, ipaddress.IPv4Network):
                used.add(net)
    return used


def remove_stale_networks() -> list[str]:
    """Remove the bridges and namespaces of nodes whose process is gone (killed without cleanup)."""
    removed = []
    for entry in _registry_dir().glob("*.json"):
        try:
            record = json.loads(entry.read_text())
        except (OSError, ValueError):
            continue
        if _pid_alive(int(record.get("pid", 0))):
            continue
        prefix = record.get("netns_prefix", "")
        if prefix and NETNS_DIR.is_dir():
            for ns in NETNS_DIR.iterdir():
                if ns.name.startswith(prefix):
                    ip("netns", "delete", ns.name, check=False)
        ip("link", "delete", record["bridge"], check=False)
        entry.unlink(missing_ok=True)
        removed.append(record["bridge"])
    return removed


@dataclass
class PodInterface:
    netns: str
    host_veth: str
    address: ipaddress.IPv4Address


@dataclass
class PodNetwork:
    """One node's bridge and its pods' namespaces. `open()` before use, `close()` after."""

    node: str
    bridge: str = ""
    subnet: ipaddress.IPv4Network | None = None
    gateway: ipaddress.IPv4Address | None = None
    _pods: dict[str, PodInterface] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _tag: str = ""

    def open(self) -> PodNetwork:
        self._tag = hashlib.sha256(f"{self.node}-{os.getpid()}-{id(self)}".encode()).hexdigest()[:6]
        self.bridge = f"{BRIDGE_PREFIX}{self._tag}"
        with file_lock("pod-network"):
            remove_stale_networks()
            used = _used_subnets()
            for candidate in POD_SUPERNET.subnets(new_prefix=24):
                if candidate.network_address.packed[2] == 0:
                    continue  # 10.244.0.0/24 is left alone: a kind cluster's first node uses it
                if not any(candidate.overlaps(u) for u in used):
                    self.subnet = candidate
                    break
            if self.subnet is None:
                raise PodNetworkError("no free /24 left in 10.244.0.0/16 for a pod network")
            self.gateway = self.subnet.network_address + 1
            (_registry_dir() / f"{self.bridge}.json").write_text(json.dumps(
                {"pid": os.getpid(), "bridge": self.bridge, "netns_prefix": self.netns_prefix,
                 "subnet": str(self.subnet)}))
            ip("link", "add", self.bridge, "type", "bridge")
            ip("addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", self.bridge)
            ip("link", "set", self.bridge, "up")
        return self

    @property
    def netns_prefix(self) -> str:
        return f"{NETNS_PREFIX}{self._tag}-"

    def _free_address(self) -> ipaddress.IPv4Address:
        assert self.subnet is not None and self.gateway is not None
        taken = {p.address for p in self._pods.values()} | {self.gateway}
        for host in self.subnet.hosts():
            if host not in taken:
                return host
        raise PodNetworkError(f"the node's pod network {self.subnet} is full")

    def add_pod(self, pod_uid: str) -> PodInterface:
        """A namespace with `lo` and `eth0` up, an address, and a default route via the gateway."""
        assert self.subnet is not None and self.gateway is not None, "open() first"
        short = hashlib.sha256(pod_uid.encode()).hexdigest()[:8]
        with self._lock:
            address = self._free_address()
            iface = PodInterface(netns=f"{self.netns_prefix}{short}", host_veth=f"{VETH_PREFIX}{short}",
                                 address=address)
            self._pods[pod_uid] = iface
        peer = f"fop{short}"
        try:
            ip("netns", "add", iface.netns)
            ip("link", "add", iface.host_veth, "type", "veth", "peer", "name", peer)
            ip("link", "set", peer, "netns", iface.netns)
            ip("link", "set", iface.host_veth, "master", self.bridge)
            ip("link", "set", iface.host_veth, "up")
            ip("-n", iface.netns, "link", "set", peer, "name", "eth0")
            ip("-n", iface.netns, "addr", "add", f"{address}/{self.subnet.prefixlen}", "dev", "eth0")
            ip("-n", iface.netns, "link", "set", "eth0", "up")
            ip("-n", iface.netns, "link", "set", "lo", "up")
            ip("-n", iface.netns, "route", "add", "default", "via", str(self.gateway))
        except PodNetworkError:
            self.remove_pod(pod_uid)
            raise
        return iface

    def remove_pod(self, pod_uid: str) -> None:
        with self._lock:
            iface = self._pods.pop(pod_uid, None)
        if iface is None:
            return
        ip("link", "delete", iface.host_veth, check=False)  # takes its peer with it
        ip("netns", "delete", iface.netns, check=False)

    def close(self) -> None:
        for uid in list(self._pods):
            self.remove_pod(uid)
        if self.bridge:
            ip("link", "delete", self.bridge, check=False)
            (_registry_dir() / f"{self.bridge}.json").unlink(missing_ok=True)
