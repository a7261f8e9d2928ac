"""A small kubelet for the local cluster: one Node whose pods run as processes on this machine.

`LocalNode` registers a Node, keeps its Ready condition and its Lease fresh, binds each pending
PersistentVolumeClaim to a directory of its own (a hostPath PersistentVolume made for the claim),
and runs every pod the real scheduler binds to it (`PodWorker`):

- a network namespace per pod with its own IP on the node's bridge (`pod_network`);
- volumes prepared in a per-pod directory (configMap, secret, emptyDir, persistentVolumeClaim,
  hostPath, projected configMap/secret/downwardAPI items; `fsGroup` applied like the kubelet) and
  bound at each `mountPath` (`container_launch`);
- init containers in order; an init container with `restartPolicy: Always` is a native sidecar:
  the next one starts once its startup probe (or, without one, its start) succeeds, and it is
  stopped after the regular containers of a finished pod;
- startup, readiness and liveness probes (httpGet, tcpSocket, exec) as the pod spec says;
- restarts by the pod's `restartPolicy` (backoff 1 s doubling to 10 s, shorter than the kubelet's);
- the pod status (phase, conditions, container statuses, pod IP) the real controllers read;
- on deletion: SIGTERM to each container's process group, SIGKILL after the grace period (at
  most MAX_GRACE_SECONDS), namespaces and directories removed, the pod deleted for good.

Images map to what they contain (`images.ImageMap`). It polls the API (pods of this node every
POLL_SECONDS) instead of watching: simpler, and it rides out API server restarts.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .images import ImageError, ImageMap
from .pod_network import PodInterface, PodNetwork

log = logging.getLogger("flipt_operator.devcluster.node")

POLL_SECONDS = 0.5
HEARTBEAT_SECONDS = 10.0
MAX_GRACE_SECONDS = 10.0
BACKOFF_MAX_SECONDS = 10.0
KUBELET_VERSION = "v1.35.4"
LEASE_NAMESPACE = "kube-node-lease"


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class PodSetupError(Exception):
    """A pod cannot start yet or at all; `reason` goes into the container's waiting state."""

    def __init__(self, reason: str, message: str, retry: bool = True) -> None:
        super().__init__(message)
        self.reason, self.retry = reason, retry


# -- the API, as plain dicts --------------------------------------------------------------------

class Api:
    """The few calls the node makes, on the `kubernetes` client, with JSON dicts in and out."""

    def __init__(self, kubeconfig: Path) -> None:
        from kubernetes import client, config

        self.client = config.new_client_from_config(config_file=str(kubeconfig))
        self.core = client.CoreV1Api(self.client)
        self.coordination = client.CoordinationV1Api(self.client)
        self.ApiException = client.ApiException

    def read(self, fn, *args: Any, **kwargs: Any) -> dict | None:
        try:
            resp = fn(*args, _preload_content=False, **kwargs)
        except self.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return json.loads(resp.data)

    def pods_on(self, node: str) -> list[dict]:
        data = self.read(self.core.list_pod_for_all_namespaces, field_selector=f"spec.nodeName={node}")
        return (data or {}).get("items", [])

    def config_map(self, namespace: str, name: str) -> dict | None:
        return self.read(self.core.read_namespaced_config_map, name, namespace)

    def secret(self, namespace: str, name: str) -> dict | None:
        return self.read(self.core.read_namespaced_secret, name, namespace)


# -- volumes and environment --------------------------------------------------------------------

def _write_items(target: Path, data: dict[str, bytes], items: list[dict] | None, default_mode: int) -> None:
    target.mkdir(parents=True, exist_ok=True)
    chosen = [(i["key"], i["path"], i.get("mode")) for i in items] if items else [(k, k, None) for k in data]
    for key, rel, mode in chosen:
        if key not in data:
            raise PodSetupError("CreateContainerConfigError", f"key {key!r} not found")
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data[key])
        path.chmod(mode if mode is not None else default_mode)


def _config_map_data(cm: dict) -> dict[str, bytes]:
    data = {k: v.encode() for k, v in (cm.get("data") or {}).items()}
    data.update({k: base64.b64decode(v) for k, v in (cm.get("binaryData") or {}).items()})
    return data


def _secret_data(secret: dict) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}


def _apply_fs_group(root: Path, gid: int, read_only: bool) -> None:
    """What the kubelet does for fsGroup: the group owns everything, can read it (and write it
    unless the volume is read-only), and new files inherit the group (setgid directories)."""
    for path in [root, *root.rglob("*")]:
        os.chown(path, -1, gid)
        mode = path.stat().st_mode & 0o7777
        if path.is_dir():
            mode |= 0o2050 | (0 if read_only else 0o020)
        else:
            mode |= 0o040 | (0 if read_only else 0o020)
        path.chmod(mode)


_FIELD_LABEL = re.compile(r"metadata\.(labels|annotations)\['(.+)'\]")


def field_value(pod: dict, path: str, pod_ip: str, host_ip: str) -> str:
    meta, spec = pod["metadata"], pod["spec"]
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": pod_ip,
        "status.hostIP": host_ip,
    }
    if path in simple:
        return simple[path]
    m = _FIELD_LABEL.fullmatch(path)
    if m:
        return (meta.get(m.group(1)) or {}).get(m.group(2), "")
    raise PodSetupError("CreateContainerConfigError", f"fieldRef {path!r} is not supported by the local node", False)


_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: known variables are replaced, unknown ones kept, $$ is $."""
    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))
    return _VAR_REF.sub(sub, value)


# -- probes ---------------------------------------------------------------------------------------

@dataclass
class Probe:
    spec: dict
    kind: str  # startup | readiness | liveness
    successes: int = 0
    failures: int = 0
    result: bool | None = None
    due: float = 0.0

    def arm(self, started: float) -> None:
        self.due = started + self.spec.get("initialDelaySeconds", 0)
        self.successes = self.failures = 0
        self.result = None

    def record(self, ok: bool, at: float) -> None:
        self.due = at + self.spec.get("periodSeconds", 10)
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            if self.successes >= self.spec.get("successThreshold", 1):
                self.result = True
        else:
            self.failures, self.successes = self.failures + 1, 0
            if self.failures >= self.spec.get("failureThreshold", 3):
                self.result = False


def _port(container: dict, port: int | str) -> int:
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return int(p["containerPort"])
    raise ValueError(f"no port named {port!r} in container {container['name']}")


# -- containers -----------------------------------------------------------------------------------

@dataclass
class ContainerRun:
    spec: dict
    init: bool
    sidecar: bool  # an init container with restartPolicy Always
    process: subprocess.Popen | None = None
    env: dict[str, str] = field(default_factory=dict)
    user: tuple[int, int, list[int]] = (0, 0, [])
    started_at: str = ""
    started_mono: float = 0.0
    restart_count: int = 0
    next_start: float = 0.0
    terminated: dict | None = None  # the last termination (state or lastState)
    done: bool = False  # finished for good (no restart)
    waiting_reason: str = "PodInitializing"
    waiting_message: str = ""
    probes: dict[str, Probe] = field(default_factory=dict)
    log_path: Path | None = None

    @property
    def name(self) -> str:
        return self.spec["name"]

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def started(self) -> bool:
        """Started in the kubelet's sense: running and past its startup probe."""
        probe = self.probes.get("startup")
        return self.running and (probe is None or probe.result is True)

    @property
    def ready(self) -> bool:
        if not self.started:
            return False
        probe = self.probes.get("readiness")
        return probe is None or probe.result is True

    def status(self, image_map: ImageMap) -> dict:
        status: dict[str, Any] = {
            "name": self.name,
            "image": self.spec.get("image", ""),
            "imageID": f"local-node://{image_map.kind(self.spec.get('image', ''))}",
            "restartCount": self.restart_count,
            "ready": self.ready,
            "started": self.started,
        }
        if self.running:
            assert self.process is not None
            status["containerID"] = f"local-node://{self.process.pid}"
            status["state"] = {"running": {"startedAt": self.started_at}}
            if self.terminated:
                status["lastState"] = {"terminated": self.terminated}
        elif self.done and self.terminated:
            status["state"] = {"terminated": self.terminated}
        else:
            waiting: dict[str, str] = {"reason": self.waiting_reason}
            if self.waiting_message:
                waiting["message"] = self.waiting_message
            status["state"] = {"waiting": waiting}
            if self.terminated:
                status["lastState"] = {"terminated": self.terminated}
        return status


def _kill_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_process(process: subprocess.Popen, grace: float) -> int | None:
    """SIGTERM the process group, SIGKILL it after `grace` seconds; the exit code."""
    if process.poll() is None:
        _kill_group(process, signal.SIGTERM)
        try:
            process.wait(timeout=max(grace, 0.1))
        except subprocess.TimeoutExpired:
            _kill_group(process, signal.SIGKILL)
            process.wait(timeout=10)
    _kill_group(process, signal.SIGKILL)  # what the main process left behind in its group
    return process.returncode


# -- one pod --------------------------------------------------------------------------------------

class PodWorker(threading.Thread):
    def __init__(self, node: LocalNode, pod: dict) -> None:
        meta = pod["metadata"]
        super().__init__(daemon=True, name=f"pod-{meta['namespace']}-{meta['name']}")
        self.node, self.pod = node, pod
        self.uid: str = meta["uid"]
        self.dir = node.state_dir / "pods" / self.uid
        self.stop_requested = threading.Event()
        self.grace = MAX_GRACE_SECONDS
        self.iface: PodInterface | None = None
        self.ip = ""
        self.start_time = now()
        self.phase = "Pending"
        self.setup_done = False
        self.setup_error: PodSetupError | None = None
        self.volumes: dict[str, Path] = {}
        spec = pod["spec"]
        self.restart_policy = spec.get("restartPolicy", "Always")
        self.inits = [ContainerRun(c, True, c.get("restartPolicy") == "Always") for c in spec.get("initContainers") or []]
        self.mains = [ContainerRun(c, False, False) for c in spec.get("containers") or []]
        self.init_index = 0
        self.transitions: dict[str, tuple[str, str]] = {}
        self.last_status: dict | None = None
        self.last_error = ""

    # -- lifecycle --
    def request_stop(self, grace: float) -> None:
        self.grace = min(grace, MAX_GRACE_SECONDS)
        self.stop_requested.set()

    @property
    def key(self) -> str:
        return f"{self.pod['metadata']['namespace']}/{self.pod['metadata']['name']}"

    def run(self) -> None:
        try:
            while not self.stop_requested.is_set():
                try:
                    if not self.setup_done:
                        self._setup()
                    if self.setup_done and self.phase not in ("Succeeded", "Failed"):
                        self._step()
                except PodSetupError as exc:
                    self.setup_error = exc
                    if not exc.retry:
                        self.phase = "Failed"
                except Exception as exc:  # noqa: BLE001 - one pod's trouble must not take the node down
                    if repr(exc) != self.last_error:  # once per distinct error, not every round
                        log.exception("pod %s: step failed", self.key)
                    self.last_error = repr(exc)
                self._report()
                self.stop_requested.wait(0.2)
        finally:
            self._teardown()

    def _teardown(self) -> None:
        for c in [*self.mains, *reversed(self.inits)]:
            if c.process is not None:
                stop_process(c.process, self.grace)
        if self.iface is not None:
            self.node.network.remove_pod(self.uid)
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- setup: network and volumes --
    def _setup(self) -> None:
        spec = self.pod["spec"]
        self.dir.mkdir(parents=True, exist_ok=True)
        self._prepare_volumes()
        if spec.get("hostNetwork"):
            self.ip = str(self.node.network.gateway)
        elif self.iface is None:
            self.iface = self.node.network.add_pod(self.uid)
            self.ip = str(self.iface.address)
        self.setup_done, self.setup_error = True, None

    def _prepare_volumes(self) -> None:
        spec, ns = self.pod["spec"], self.pod["metadata"]["namespace"]
        fs_group = (spec.get("securityContext") or {}).get("fsGroup")
        for volume in spec.get("volumes") or []:
            name = volume["name"]
            target = self.dir / "volumes" / name
            read_only = True
            if "emptyDir" in volume:
                target.mkdir(parents=True, exist_ok=True)
                read_only = False
            elif "configMap" in volume or "secret" in volume:
                self._object_volume(ns, volume, target)
            elif "projected" in volume:
                target.mkdir(parents=True, exist_ok=True)
                for source in volume["projected"].get("sources") or []:
                    self._object_volume(ns, source, target, volume["projected"].get("defaultMode", 0o644))
            elif "downwardAPI" in volume:
                self._object_volume(ns, volume, target)
            elif "persistentVolumeClaim" in volume:
                self.volumes[name] = self.node.claim_path(ns, volume["persistentVolumeClaim"]["claimName"])
                continue
            elif "hostPath" in volume:
                self.volumes[name] = Path(volume["hostPath"]["path"])
                continue
            else:
                kinds = sorted(set(volume) - {"name"})
                raise PodSetupError("CreateContainerConfigError",
                                    f"volume {name}: {kinds} is not supported by the local node", retry=False)
            if fs_group is not None:
                _apply_fs_group(target, int(fs_group), read_only)
            self.volumes[name] = target

    def _object_volume(self, ns: str, source: dict, target: Path, default_mode: int | None = None) -> None:
        api = self.node.api
        if "configMap" in source:
            ref = source["configMap"]
            obj = api.config_map(ns, ref["name"])
            data = _config_map_data(obj) if obj else None
            what = f"configmap {ref['name']}"
        elif "secret" in source:
            ref = source["secret"]
            name = ref.get("secretName") or ref.get("name")
            obj = api.secret(ns, name)
            data = _secret_data(obj) if obj else None
            what = f"secret {name}"
        elif "downwardAPI" in source:
            ref = source["downwardAPI"]
            data = {i["path"]: field_value(self.pod, i["fieldRef"]["fieldPath"], self.ip, self.node.host_ip).encode()
                    for i in ref.get("items") or [] if "fieldRef" in i}
            ref = dict(ref, items=[{"key": p, "path": p} for p in data])
            what = "downwardAPI"
        else:
            raise PodSetupError("CreateContainerConfigError",
                                f"projected source {sorted(source)} is not supported by the local node", retry=False)
        if data is None:
            if ref.get("optional"):
                target.mkdir(parents=True, exist_ok=True)
                return
            raise PodSetupError("CreateContainerConfigError", f"{what} not found")
        mode = ref.get("defaultMode", default_mode if default_mode is not None else 0o644)
        _write_items(target, data, ref.get("items"), mode)

    # -- containers --
    def _env(self, c: ContainerRun) -> dict[str, str]:
        api, ns = self.node.api, self.pod["metadata"]["namespace"]
        env: dict[str, str] = {}
        for source in c.spec.get("envFrom") or []:
            prefix = source.get("prefix", "")
            if "configMapRef" in source:
                obj = api.config_map(ns, source["configMapRef"]["name"])
                values = _config_map_data(obj) if obj else None
            else:
                obj = api.secret(ns, source["secretRef"]["name"])
                values = _secret_data(obj) if obj else None
            ref = source.get("configMapRef") or source.get("secretRef") or {}
            if values is None:
                if ref.get("optional"):
                    continue
                raise PodSetupError("CreateContainerConfigError", f"envFrom {ref.get('name')} not found")
            env.update({prefix + k: v.decode() for k, v in values.items()})
        for var in c.spec.get("env") or []:
            name = var["name"]
            if "valueFrom" not in var:
                env[name] = expand(var.get("value", ""), env)
                continue
            vf = var["valueFrom"]
            if "fieldRef" in vf:
                env[name] = field_value(self.pod, vf["fieldRef"]["fieldPath"], self.ip, self.node.host_ip)
            elif "secretKeyRef" in vf or "configMapKeyRef" in vf:
                ref = vf.get("secretKeyRef") or vf["configMapKeyRef"]
                obj = (api.secret if "secretKeyRef" in vf else api.config_map)(ns, ref["name"])
                values = (_secret_data if "secretKeyRef" in vf else _config_map_data)(obj) if obj else {}
                if ref["key"] in values:
                    env[name] = values[ref["key"]].decode()
                elif not ref.get("optional"):
                    raise PodSetupError("CreateContainerConfigError",
                                        f"env {name}: key {ref['key']!r} of {ref['name']} not found")
            else:
                raise PodSetupError("CreateContainerConfigError",
                                    f"env {name}: {sorted(vf)} is not supported by the local node", retry=False)
        return env

    def _user(self, c: ContainerRun) -> tuple[int, int, list[int]]:
        pod_sc = self.pod["spec"].get("securityContext") or {}
        sc = c.spec.get("securityContext") or {}
        default_uid, default_gid = self.node.images.default_user(c.spec.get("image", ""))
        uid = sc.get("runAsUser", pod_sc.get("runAsUser", default_uid))
        gid = sc.get("runAsGroup", pod_sc.get("runAsGroup", default_gid))
        groups = [gid, *pod_sc.get("supplementalGroups", [])]
        if pod_sc.get("fsGroup") is not None:
            groups.append(pod_sc["fsGroup"])
        return int(uid), int(gid), sorted(set(int(g) for g in groups))

    def _name_files(self) -> list[dict]:
        """/etc/hosts and /etc/resolv.conf, as the kubelet manages them. There is no cluster DNS,
        and the host's resolver is not reachable from a pod: lookups fail at once (a resolver on
        the pod's own loopback refuses), not after the seconds of a resolver that never answers."""
        if self.pod["spec"].get("hostNetwork"):
            return []
        hostname = self.pod["spec"].get("hostname") or self.pod["metadata"]["name"]
        hosts, resolv = self.dir / "etc-hosts", self.dir / "resolv.conf"
        hosts.write_text(f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{self.ip}\t{hostname}\n")
        resolv.write_text("nameserver 127.0.0.1\noptions attempts:1 timeout:1\n")
        for path in (hosts, resolv):
            path.chmod(0o644)
        return [{"source": str(hosts), "mountPath": "/etc/hosts", "readOnly": True},
                {"source": str(resolv), "mountPath": "/etc/resolv.conf", "readOnly": True}]

    def _mounts(self, c: ContainerRun) -> list[dict]:
        mounts = self._name_files()
        for m in c.spec.get("volumeMounts") or []:
            source = self.volumes.get(m["name"])
            if source is None:
                raise PodSetupError("CreateContainerConfigError", f"volumeMount {m['name']}: no such volume", False)
            if m.get("subPath"):
                source = source / m["subPath"]
                if not source.exists():
                    source.mkdir(parents=True)
            mounts.append({"source": str(source), "mountPath": m["mountPath"], "readOnly": bool(m.get("readOnly"))})
        return mounts

    def _start(self, c: ContainerRun, at: float) -> None:
        try:
            env = self._env(c)
            command = [expand(a, env) for a in self.node.images.command(
                c.spec.get("image", ""), c.spec.get("command") or [], c.spec.get("args") or [])]
            mounts = self._mounts(c)
        except ImageError as exc:
            raise PodSetupError("CreateContainerConfigError", str(exc), retry=False) from exc
        uid, gid, groups = self._user(c)
        sc = c.spec.get("securityContext") or {}
        cdir = self.dir / "containers" / f"{c.name}-{c.restart_count}"
        cdir.mkdir(parents=True, exist_ok=True)
        spec = {
            "work_dir": str(cdir),
            "hostname": self.pod["metadata"]["name"],
            "netns": self.iface.netns if self.iface else None,
            "mounts": mounts,
            "readOnlyRootFilesystem": bool(sc.get("readOnlyRootFilesystem")),
            "traverse": self.node.traverse,
            "runtime": self.node.runtime,
            "user": {"uid": uid, "gid": gid, "groups": groups},
            "env": env,
            "workingDir": c.spec.get("workingDir"),
            "command": command,
        }
        spec_path = cdir / "launch.json"
        spec_path.write_text(json.dumps(spec))
        spec_path.chmod(0o600)
        c.log_path = self.node.log_dir / f"{self.pod['metadata']['namespace']}_{self.pod['metadata']['name']}_{c.name}.log"
        with open(c.log_path, "ab") as out:
            out.write(f"--- {now()} start #{c.restart_count}: {command}\n".encode())
            out.flush()
            c.process = subprocess.Popen(
                [sys.executable, "-m", "flipt_operator.devcluster.container_launch", str(spec_path)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                close_fds=True,
            )
        c.env, c.user = env, (uid, gid, groups)
        c.started_at, c.started_mono = now(), at
        c.waiting_reason, c.waiting_message = "", ""
        c.probes = {kind: Probe(c.spec[f"{kind}Probe"], kind) for kind in ("startup", "readiness", "liveness")
                    if c.spec.get(f"{kind}Probe")}
        for probe in c.probes.values():
            probe.arm(at)

    def _run_probe(self, c: ContainerRun, probe: Probe) -> bool:
        spec, timeout = probe.spec, probe.spec.get("timeoutSeconds", 1)
        try:
            if "httpGet" in spec:
                h = spec["httpGet"]
                host = h.get("host") or self.ip
                url = f"{h.get('scheme', 'HTTP').lower()}://{host}:{_port(c.spec, h['port'])}{h.get('path', '/')}"
                req = urllib.request.Request(url, headers={x["name"]: x["value"] for x in h.get("httpHeaders") or []})
                try:
                    with urllib.request.urlopen(req, timeout=timeout) as resp:
                        return 200 <= resp.status < 400
                except urllib.error.HTTPError as exc:
                    return 200 <= exc.code < 400
            if "tcpSocket" in spec:
                t = spec["tcpSocket"]
                with socket.create_connection((t.get("host") or self.ip, _port(c.spec, t["port"])), timeout=timeout):
                    return True
            if "exec" in spec and c.process is not None:
                uid, gid, _ = c.user
                res = subprocess.run(
                    ["nsenter", "-t", str(c.process.pid), "-n", "-m", "-u", "-r", "-w", "-S", str(uid), "-G", str(gid),
                     "--", *spec["exec"]["command"]],
                    env=c.env | {"PATH": c.env.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")},
                    capture_output=True, timeout=timeout + 1, check=False)
                return res.returncode == 0
        except (OSError, ValueError, subprocess.TimeoutExpired):
            return False
        return False  # grpc probes are not supported by the local node: they fail, visibly

    def _supervise(self, c: ContainerRun, at: float) -> None:
        """Probes and exits of one started container; restarts by policy."""
        assert c.process is not None
        code = c.process.poll()
        if code is None:
            for kind in ("startup", "liveness", "readiness"):
                probe = c.probes.get(kind)
                if probe is None or at < probe.due:
                    continue
                if kind != "startup" and "startup" in c.probes and c.probes["startup"].result is not True:
                    continue
                if kind == "startup" and probe.result is True:
                    continue
                probe.record(self._run_probe(c, probe), at)
                if kind in ("startup", "liveness") and probe.result is False:
                    log.info("pod %s: %s probe of %s failed: restarting it", self.key, kind, c.name)
                    code = stop_process(c.process, self.pod["spec"].get("terminationGracePeriodSeconds", 30) or 0)
                    break
            if code is None:
                return
        stop_process(c.process, 0)
        c.terminated = {"exitCode": code if code >= 0 else 128 - code,
                        "reason": "Completed" if code == 0 else "Error",
                        "startedAt": c.started_at, "finishedAt": now()}
        c.process = None
        if c.sidecar:
            restart = True
        elif c.init:  # a regular init container runs until it succeeds, unless the pod never restarts
            restart = code != 0 and self.restart_policy != "Never"
        else:
            restart = self.restart_policy == "Always" or (self.restart_policy == "OnFailure" and code != 0)
        if restart and not self._finished_mains():
            c.restart_count += 1
            c.next_start = at + min(2 ** (c.restart_count - 1), BACKOFF_MAX_SECONDS)
            c.waiting_reason = "CrashLoopBackOff" if code != 0 else "Completed"
        else:
            c.done = True

    def _finished_mains(self) -> bool:
        return self.restart_policy != "Always" and all(c.done for c in self.mains)

    def _step(self) -> None:
        at = time.monotonic()
        # init containers, in order
        while self.init_index < len(self.inits):
            c = self.inits[self.init_index]
            if c.process is None and not c.done and at >= c.next_start:
                self._start(c, at)
            if c.process is not None:
                self._supervise(c, at)
            if c.sidecar and c.started:
                self.init_index += 1
                continue
            if not c.sidecar and c.done:
                if c.terminated and c.terminated["exitCode"] != 0:
                    self.phase = "Failed"
                    return
                self.init_index += 1
                continue
            return
        for c in self.inits:  # native sidecars keep running (and restarting) beside the containers
            if c.sidecar and not c.done:
                if c.process is None and at >= c.next_start:
                    self._start(c, at)
                if c.process is not None:
                    self._supervise(c, at)
        for c in self.mains:
            if c.done:
                continue
            if c.process is None and at >= c.next_start:
                self._start(c, at)
            if c.process is not None:
                self._supervise(c, at)
        if self._finished_mains():
            for c in self.inits:
                if c.sidecar and c.process is not None:
                    stop_process(c.process, self.grace)
                    c.process, c.done = None, True
            failed = any(c.terminated and c.terminated["exitCode"] != 0 for c in self.mains)
            self.phase = "Failed" if failed else "Succeeded"
            self.node.network.remove_pod(self.uid)
            self.iface = None
        elif any(c.running for c in self.mains):
            self.phase = "Running"

    # -- status --
    def _condition(self, kind: str, ok: bool, reason: str = "") -> dict:
        value = "True" if ok else "False"
        previous = self.transitions.get(kind)
        if previous is None or previous[0] != value:
            self.transitions[kind] = (value, now())
        cond = {"type": kind, "status": value, "lastTransitionTime": self.transitions[kind][1],
                "lastProbeTime": None}
        if reason and not ok:
            cond["reason"] = reason
        return cond

    def status(self) -> dict:
        images = self.node.images
        initialized = self.init_index >= len(self.inits)
        terminal = self.phase in ("Succeeded", "Failed")
        containers_ready = (not terminal and initialized and all(c.ready for c in self.mains)
                            and all(c.ready for c in self.inits if c.sidecar))
        inits = [c.status(images) for c in self.inits]
        mains = [c.status(images) for c in self.mains]
        if self.setup_error is not None:
            for s in [*inits, *mains]:
                if "waiting" in s["state"]:
                    s["state"]["waiting"] = {"reason": self.setup_error.reason, "message": str(self.setup_error)}
        status: dict[str, Any] = {
            "phase": self.phase,
            "hostIP": self.node.host_ip,
            "hostIPs": [{"ip": self.node.host_ip}],
            "startTime": self.start_time,
            "conditions": [
                self._condition("PodScheduled", True),
                self._condition("PodReadyToStartContainers", self.setup_done),
                self._condition("Initialized", initialized, "ContainersNotInitialized"),
                self._condition("ContainersReady", containers_ready, "ContainersNotReady"),
                self._condition("Ready", containers_ready, "ContainersNotReady"),
            ],
            "containerStatuses": mains,
        }
        if inits:
            status["initContainerStatuses"] = inits
        if self.ip:
            status["podIP"] = self.ip
            status["podIPs"] = [{"ip": self.ip}]
        return status

    def _report(self) -> None:
        status = self.status()
        if status == self.last_status:
            return
        meta = self.pod["metadata"]
        try:
            self.node.api.core.patch_namespaced_pod_status(meta["name"], meta["namespace"], {"status": status})
            self.last_status = status
        except self.node.api.ApiException as exc:
            if exc.status == 404:
                self.stop_requested.set()
            else:
                log.warning("pod %s: status not written: %s", self.key, exc.status)
        except Exception as exc:  # noqa: BLE001 - the API server may be down: the next round retries
            log.warning("pod %s: status not written: %s", self.key, exc)


# -- the node -------------------------------------------------------------------------------------

class LocalNode:
    def __init__(self, kubeconfig: Path, name: str, state_dir: Path, images: ImageMap | None = None) -> None:
        self.name, self.state_dir = name, state_dir
        self.log_dir = state_dir / "logs"
        self.api = Api(kubeconfig)
        self.images = images or ImageMap.for_this_interpreter()
        self.network = PodNetwork(node=name)
        self.workers: dict[str, PodWorker] = {}
        self.stopped = threading.Event()
        self.threads: list[threading.Thread] = []
        import flipt_operator

        # What a container's user must be able to reach on the host (see container_launch).
        self.traverse = [os.path.realpath(sys.executable), sys.executable, str(Path(flipt_operator.__file__).parent)]
        # What a container must still see when a volume is mounted over one of its ancestors: the
        # virtualenv, the interpreter it links to, and the package's source (an editable install).
        self.runtime = sorted({sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable)),
                               str(Path(flipt_operator.__file__).resolve().parent)})

    @property
    def host_ip(self) -> str:
        return str(self.network.gateway)

    # -- start/stop --
    def start(self) -> LocalNode:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.network.open()
        self._register()
        # The heartbeat follows the registration just made; pods and claims start at once.
        for step, seconds, name, wait_first in ((self._heartbeat, HEARTBEAT_SECONDS, "heartbeat", True),
                                                (self._sync_pods, POLL_SECONDS, "pods", False),
                                                (self._provision_claims, 1.0, "claims", False)):
            thread = threading.Thread(target=self._repeat, args=(step, seconds, name, wait_first),
                                      name=f"node-{name}", daemon=True)
            thread.start()
            self.threads.append(thread)
        return self

    def stop(self) -> None:
        self.stopped.set()
        for thread in self.threads:
            thread.join(timeout=5)
        for worker in list(self.workers.values()):
            worker.request_stop(0)
        for worker in list(self.workers.values()):
            worker.join(timeout=30)
        self.network.close()
        try:
            self.api.core.delete_node(self.name)
        except Exception:  # noqa: BLE001 - the API server may be gone already
            pass

    # -- node object and lease --
    def _node_status(self) -> dict:
        stamp = now()
        conditions = [
            {"type": t, "status": "False", "reason": f"LocalNodeHas{r}", "message": m}
            for t, r, m in (("MemoryPressure", "SufficientMemory", "no memory pressure is reported"),
                            ("DiskPressure", "NoDiskPressure", "no disk pressure is reported"),
                            ("PIDPressure", "SufficientPID", "no PID pressure is reported"))
        ]
        conditions.append({"type": "Ready", "status": "True", "reason": "LocalNodeReady",
                           "message": "the flipt-operator local node runs pods as processes"})
        for c in conditions:
            c["lastHeartbeatTime"] = stamp
            c.setdefault("lastTransitionTime", self._started_at)
        capacity = {"cpu": "16", "memory": "64Gi", "pods": "110", "ephemeral-storage": "100Gi"}
        return {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": conditions,
            "addresses": [{"type": "InternalIP", "address": self.host_ip},
                          {"type": "Hostname", "address": self.name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": os.uname().release,
                "osImage": "flipt-operator local node", "containerRuntimeVersion": "local-node://0",
                "kubeletVersion": KUBELET_VERSION, "kubeProxyVersion": "", "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }

    def _register(self) -> None:
        self._started_at = now()
        body = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": self.name, "labels": {"kubernetes.io/hostname": self.name,
                                                           "kubernetes.io/os": "linux",
                                                           "flipt-operator/local-node": "true"}},
                "spec": {}}
        try:
            self.api.core.create_node(body)  # type: ignore[arg-type]  # dicts work
        except self.api.ApiException as exc:
            if exc.status != 409:
                raise
        self._heartbeat()

    def _heartbeat(self) -> None:
        self.api.core.patch_node_status(self.name, {"status": self._node_status()})
        lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                 "metadata": {"name": self.name, "namespace": LEASE_NAMESPACE},
                 "spec": {"holderIdentity": self.name, "leaseDurationSeconds": 40,
                          "renewTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")}}
        try:
            self.api.coordination.patch_namespaced_lease(self.name, LEASE_NAMESPACE, {"spec": lease["spec"]})
        except self.api.ApiException as exc:
            if exc.status != 404:
                raise
            self.api.coordination.create_namespaced_lease(LEASE_NAMESPACE, lease)  # type: ignore[arg-type]

    def _repeat(self, step: Callable[[], None], seconds: float, name: str, wait_first: bool) -> None:
        """Run `step` every `seconds` until the node stops; a failure (the API down) waits for the next round."""
        if wait_first and self.stopped.wait(seconds):
            return
        while not self.stopped.is_set():
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - API down: next round
                log.warning("node %s failed: %s", name, exc)
            self.stopped.wait(seconds)

    # -- pods --
    def _sync_pods(self) -> None:
        pods = {p["metadata"]["uid"]: p for p in self.api.pods_on(self.name)}
        for uid, pod in pods.items():
            worker = self.workers.get(uid)
            deleting = pod["metadata"].get("deletionTimestamp")
            if worker is None:
                if deleting or pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
                    if deleting:
                        self._finish_delete(pod)
                    continue
                worker = PodWorker(self, pod)
                self.workers[uid] = worker
                worker.start()
            elif deleting and not worker.stop_requested.is_set():
                worker.request_stop(float(pod["metadata"].get("deletionGracePeriodSeconds") or 0))
        for uid, worker in list(self.workers.items()):
            if uid not in pods:
                worker.request_stop(0)
            if worker.stop_requested.is_set() and not worker.is_alive():
                del self.workers[uid]
                if uid in pods:
                    self._finish_delete(pods[uid])

    def _finish_delete(self, pod: dict) -> None:
        """The kubelet's last word on a deleted pod: its containers are gone, remove it now."""
        from kubernetes import client

        meta = pod["metadata"]
        try:
            self.api.core.delete_namespaced_pod(
                meta["name"], meta["namespace"], grace_period_seconds=0,
                body=client.V1DeleteOptions(grace_period_seconds=0, preconditions=client.V1Preconditions(uid=meta["uid"])))
        except self.api.ApiException as exc:
            if exc.status not in (404, 409):
                raise

    # -- claims: a directory per PersistentVolumeClaim --
    def claim_path(self, namespace: str, claim: str) -> Path:
        pvc = self.api.read(self.api.core.read_namespaced_persistent_volume_claim, claim, namespace)
        volume = (pvc or {}).get("spec", {}).get("volumeName")
        if not volume:
            raise PodSetupError("ContainerCreating", f"persistentvolumeclaim {claim} is not bound")
        pv = self.api.read(self.api.core.read_persistent_volume, volume) or {}
        path = (pv.get("spec", {}).get("hostPath") or pv.get("spec", {}).get("local") or {}).get("path")
        if not path:
            raise PodSetupError("CreateContainerConfigError", f"volume {volume} has no hostPath or local path", False)
        Path(path).mkdir(parents=True, exist_ok=True)
        return Path(path)

    def _provision_claims(self) -> None:
        claims = self.api.read(self.api.core.list_persistent_volume_claim_for_all_namespaces) or {}
        for pvc in claims.get("items", []):
            meta, spec = pvc["metadata"], pvc["spec"]
            if spec.get("volumeName") or pvc.get("status", {}).get("phase") != "Pending":
                continue
            name = f"local-{meta['uid']}"
            path = self.state_dir / "volumes" / name
            path.mkdir(parents=True, exist_ok=True)
            pv = {"apiVersion": "v1", "kind": "PersistentVolume",
                  "metadata": {"name": name, "labels": {"flipt-operator/local-node": self.name}},
                  "spec": {"capacity": {"storage": spec.get("resources", {}).get("requests", {}).get("storage", "1Gi")},
                           "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                           "persistentVolumeReclaimPolicy": "Retain",
                           "storageClassName": spec.get("storageClassName") or "",
                           "volumeMode": spec.get("volumeMode") or "Filesystem",
                           "claimRef": {"namespace": meta["namespace"], "name": meta["name"], "uid": meta["uid"]},
                           "hostPath": {"path": str(path), "type": "DirectoryOrCreate"}}}
            try:
                self.api.core.create_persistent_volume(pv)  # type: ignore[arg-type]  # dicts work
            except self.api.ApiException as exc:
                if exc.status != 409:
                    raise


def run_node(kubeconfig: Path, name: str, state_dir: Path) -> int:
    """Run a node until SIGTERM/SIGINT, then stop its pods and remove what it made."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    node = LocalNode(kubeconfig, name, state_dir)
    try:
        node.start()
        log.info("node %s ready: pod network %s, bridge %s, logs in %s", name, node.network.subnet,
                 node.network.bridge, node.log_dir)
        print(f"node {name} ready", flush=True)
        done.wait()
    finally:
        node.stop()
        log.info("node %s stopped and cleaned up", name)
    return 0


@dataclass
class NodeProcess:
    """A `dev-cluster node` running as a child process (tests, scripts): stop() ends it by its pid,
    and it removes its pods, namespaces, interfaces and directories on the way out."""

    process: subprocess.Popen
    name: str
    state_dir: Path
    log_path: Path
    host_ip: str = ""

    @property
    def container_logs(self) -> Path:
        return self.state_dir / "logs"

    def container_log(self, namespace: str, pod: str, container: str) -> str:
        path = self.container_logs / f"{namespace}_{pod}_{container}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, timeout: float = 60.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_node_process(kubeconfig: Path, state_dir: Path, name: str = "local-node",
                       timeout: float = 60.0, detached: bool = False) -> NodeProcess:
    """Start `flipt-operator dev-cluster node` and wait until its Node is Ready in the API.
    Attached (the default) it gets SIGTERM, and so cleans up, when the thread that started it ends,
    even if this process is killed; `detached=True` lets it outlive this process (`dev-cluster start`)."""
    from .cluster import _die_with_parent

    state_dir.mkdir(parents=True, exist_ok=True)
    log_path = state_dir / "node.log"
    with open(log_path, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "flipt_operator", "dev-cluster", "node", "--kubeconfig", str(kubeconfig),
             "--name", name, "--state-dir", str(state_dir)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=None if detached else _die_with_parent)
    node = NodeProcess(process, name, state_dir, log_path)
    api = Api(kubeconfig)
    deadline = time.monotonic() + timeout
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the local node exited with {process.returncode}; see {log_path}:\n"
                                   + log_path.read_text(errors="replace")[-3000:])
            obj = api.read(api.core.read_node, name) or {}
            ready = any(c["type"] == "Ready" and c["status"] == "True"
                        for c in obj.get("status", {}).get("conditions") or [])
            if ready:
                node.host_ip = next(a["address"] for a in obj["status"]["addresses"] if a["type"] == "InternalIP")
                return node
            if time.monotonic() > deadline:
                raise RuntimeError(f"the local node was not Ready after {timeout:.0f}s; see {log_path}")
            time.sleep(0.2)
    except BaseException:
        node.stop()
        raise
    finally:
        api.client.close()
