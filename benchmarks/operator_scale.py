"""Operator at scale on a real local kube-apiserver.

    .venv/bin/python benchmarks/operator_scale.py --count 200
    .venv/bin/python benchmarks/operator_scale.py --count 1000 --changes 5 --burst 100

    .venv/bin/python benchmarks/operator_scale.py --count 10000 --namespaces 100 --floor-sample 8000

1. Ready: creates COUNT sets (a Secret, a FliptCredential, a git FliptStorage and a
   FliptEnvironment with its own server) spread over NAMESPACES namespaces (the operator
   watches all of them), with a stand-in Deployment controller that reports each server
   Deployment available (there is no kubelet), and times until every environment is Ready.
   Floor, in the same run: a FIXED number of writes (the 4 objects of each set plus the 4
   children of each server: 8 x COUNT) issued by a plain client with the same 8 workers as
   ConfigMap creates. It does not depend on what the operator does. `--floor-sample W` times W
   of those writes and scales the time to 8 x COUNT (said in the output), for runs where the
   whole floor would take longer than the time it is there to judge.
2. The operator's peak memory (VmHWM of /proc/<pid>/status, not a sampled RSS).
3. One change, CHANGES times: a storage's pollInterval; time until its status
   (observedGeneration) and its server's ConfigMap show it, and what it cost: passes, servers
   planned, API reads and writes, from the operator's metrics.
4. A burst: BURST changes to distinct storages spread over 10 s; latency of each, as in 3.
5. Unrelated Secrets and ConfigMaps (UNRELATED of each): passes they ran (goal 0).
6. Restarts the operator (a full resync of unchanged objects) and counts its API writes.

`--trace-memory` traces the operator's allocations once it has started (tracemalloc, see
benchmarks/memory_trace/sitecustomize.py) and prints where its memory was allocated with
everything Ready and at the restart's peak. It slows the operator and adds memory of its own:
its timings and VmHWM are not the figures.

The operator runs at its default log level (info), as deployed: `--verbose-operator` adds its
debug logs (every API request and handler call), which cost a CPU-bound operator real time.
The script prints the operator's CPU time until all are Ready beside the wall time.

`--operator-path DIR` runs the operator from another checkout's `operator/` directory (a
baseline of the same run; its metrics may lack the request counter, printed as n/a).
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import contextlib
import os
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
from collections import Counter
from pathlib import Path

from kubernetes import client, watch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flipt_operator.devcluster.build import build_apiserver  # noqa: E402
from flipt_operator.devcluster.cluster import LocalCluster, apply_crds  # noqa: E402
from tests.support.deployments import report_available  # noqa: E402
from tests.support.operator_fixtures import metric_value, start_operator  # noqa: E402

GROUP, VERSION = "flipt.io", "v1alpha1"
WORKERS = 8
NAMESPACES: list[str] = ["bench"]  # set i lives in NAMESPACES[i % len(NAMESPACES)]


def namespace_of(i: int) -> str:
    return NAMESPACES[i % len(NAMESPACES)]


def set_index(name: str) -> int:
    """The set a name belongs to: flags-12, srv-12-config -> 12."""
    return int(name.split("-")[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (/proc/<pid>/stat, fields 14 and 15, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def vm_hwm_mb(pid: int, field: str = "VmHWM") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class PeakTracker(threading.Thread):
    """Samples the operator's VmHWM and the number of passes it has finished, so the output can
    say during which phase the high-water mark was reached (both read, not inferred)."""

    def __init__(self, operator) -> None:
        super().__init__(daemon=True)
        self.operator, self.stopped, self.by_passes = operator, threading.Event(), {}

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                passes = metric_value(self.operator.metrics(), "flipt_operator_reconciles_total", 'kind="Namespace"')
                self.by_passes[int(passes)] = vm_hwm_mb(self.operator.process.pid)
            except Exception:  # noqa: BLE001 - not serving metrics yet
                pass
            self.stopped.wait(0.2)

    def summary(self) -> str:
        return ", ".join(f"{mb:.0f} MB after {passes} passes" for passes, mb in sorted(self.by_passes.items()))


def memory_owners(snapshot_path: Path, top: int = 12) -> list[str]:
    """Where a tracemalloc snapshot's memory was allocated: by package, and by the innermost line
    of the operator (else kopf, else the Kubernetes client) on each allocation's stack. It says
    what allocated a block, not what keeps it (a body kopf parses and our cache keeps is kopf's)."""
    snapshot = tracemalloc.Snapshot.load(str(snapshot_path))
    packages = ("flipt_operator", "kopf", "kubernetes", "aiohttp", "pydantic", "prometheus_client", "json")
    by_package, by_line = Counter(), Counter()
    for trace in snapshot.traces:
        frames = list(reversed(trace.traceback))  # innermost first
        owner = next((p for p in packages if any(f"/{p}/" in f.filename for f in frames)), "other")
        where = next((f for f in frames if f"/{owner}/" in f.filename), frames[0])
        by_package[owner] += trace.size
        by_line[f"{where.filename.rsplit('site-packages/', 1)[-1].rsplit('operator/', 1)[-1]}:{where.lineno}"] += trace.size
    total = sum(by_package.values())
    lines = [f"traced {total / 2**20:.0f} MB in {len(snapshot.traces)} blocks; by package (first on the stack of: "
             + ", ".join(packages) + "): "
             + ", ".join(f"{name} {size / 2**20:.0f} MB" for name, size in by_package.most_common())]
    lines += [f"    {size / 2**20:6.1f} MB  {where}" for where, size in by_line.most_common(top)]
    return lines


def wait_for_file(path: Path, timeout: float = 120) -> Path:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path.name} was not written")
        time.sleep(0.5)
    return path


def custom(api, namespace, plural, name, spec):
    kind = {"fliptcredentials": "FliptCredential", "fliptstorages": "FliptStorage",
            "fliptenvironments": "FliptEnvironment"}[plural]
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, plural,
        {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind, "metadata": {"name": name}, "spec": spec})


def create_set(api, namespace: str, i: int) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_secret(namespace, {"metadata": {"name": f"token-{i}"},
                                              "data": {"token": base64.b64encode(b"t").decode()}})
    custom(api, namespace, "fliptcredentials", f"cred-{i}", {"type": "accessToken", "secretRef": {"name": f"token-{i}"}})
    custom(api, namespace, "fliptstorages", f"flags-{i}", {"git": {
        "remote": f"https://git.example.com/flags-{i}.git", "credentialRef": {"name": f"cred-{i}"}}})
    custom(api, namespace, "fliptenvironments", f"env-{i}", {"storage": f"flags-{i}", "default": True,
                                                             "server": f"srv-{i}"})


def watch_all(list_call, on_object, stopped: threading.Event, **kwargs) -> None:
    """Feeds every object of a kind, in every namespace, to `on_object` until `stopped`."""
    while not stopped.is_set():
        try:
            # Long enough that no restart (and its gap) falls inside a measurement.
            for event in watch.Watch().stream(list_call, timeout_seconds=1800, **kwargs):
                on_object(event["object"])
                if stopped.is_set():
                    return
        except Exception:  # noqa: BLE001 - an expired watch: start again
            time.sleep(0.1)


class ReadyCounter:
    """Counts the environments whose Ready condition is True, from a watch over all namespaces
    (a LIST of every environment twice a second weighed on the API server at thousands)."""

    def __init__(self, api) -> None:
        self.ready: set[str] = set()
        self.stopped = threading.Event()
        custom_api = client.CustomObjectsApi(api)

        def seen(obj) -> None:
            key = f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"
            if any(c["type"] == "Ready" and c["status"] == "True"
                   for c in (obj.get("status") or {}).get("conditions", [])):
                self.ready.add(key)
            else:
                self.ready.discard(key)

        threading.Thread(target=watch_all, daemon=True, args=(
            lambda **kw: custom_api.list_cluster_custom_object(GROUP, VERSION, "fliptenvironments", **kw),
            seen, self.stopped)).start()

    def count(self) -> int:
        return len(self.ready)


class StandInDeploymentControllerAllNamespaces(threading.Thread):
    """Reports every Deployment available whenever its generation moves on, as the real
    controller would once its pods run, fed by a watch over all namespaces like the real
    controller's informer (tests' StandInDeploymentController LISTs one namespace every 0.2 s:
    at thousands of Deployments those LISTs were most of the API server's work)."""

    def __init__(self, api) -> None:
        super().__init__(daemon=True, name="deployment-controller")
        self.apps, self.stopped, self.writes = client.AppsV1Api(api), threading.Event(), 0

    def run(self) -> None:
        def seen(deployment) -> None:
            if (deployment.status.observed_generation or 0) < deployment.metadata.generation:
                try:
                    report_available(self.apps, deployment)
                    self.writes += 1
                except Exception:  # noqa: BLE001 - changed meanwhile: its next event comes
                    pass

        watch_all(self.apps.list_deployment_for_all_namespaces, seen, self.stopped)


def floor_seconds(api, namespace: str, writes: int, sample: int = 0) -> tuple[float, str]:
    """Seconds for `writes` plain ConfigMap creates; with `sample`, the time of that many scaled
    to `writes`. Returns the seconds and how they were obtained."""
    core = client.CoreV1Api(api)
    done = min(sample, writes) if sample else writes
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(lambda i: core.create_namespaced_config_map(
            namespace, {"metadata": {"name": f"floor-{i}"}, "data": {"k": "v"}}), range(done)))
    seconds = time.monotonic() - started
    if done == writes:
        return seconds, "timed"
    return seconds * writes / done, f"scaled from {done} timed in {seconds:.1f} s"


class Costs:
    """The operator's counters, read from its metrics: passes, servers planned, API requests."""

    def __init__(self, operator) -> None:
        self.operator = operator

    def read(self) -> dict[str, float | None]:
        text = self.operator.metrics()
        has_requests = "flipt_operator_api_requests_total" in text
        requests = (lambda verbs: sum(metric_value(text, "flipt_operator_api_requests_total", f'verb="{v}"')
                                      for v in verbs)) if has_requests else (lambda verbs: None)
        return {
            "passes": metric_value(text, "flipt_operator_reconciles_total", 'kind="Namespace"'),
            "servers planned": (metric_value(text, "flipt_operator_pass_servers_total")
                                if "flipt_operator_pass_servers_total" in text else None),
            "reads": requests(("get", "list")),
            "writes": requests(("create", "patch", "update", "delete")),
            "changes written": metric_value(text, "flipt_operator_api_writes_total"),
        }

    def settled(self) -> bool:
        return metric_value(self.operator.metrics(), "flipt_operator_passes_in_progress") == 0

    def quiet_now(self) -> dict[str, float | None] | None:
        """The counters if no pass runs; None while one does, or while the operator is too busy
        to answer its metrics in time (a 5,000-set run lost its figures to one such timeout)."""
        try:
            return self.read() if self.settled() else None
        except OSError:  # URLError and socket timeouts
            return None

    def wait_quiet(self, quiet: float = 1.5, timeout: float = 120) -> dict[str, float | None]:
        """The counters once no pass runs and none has changed for `quiet` seconds."""
        deadline, last, since = time.monotonic() + timeout, None, time.monotonic()
        while time.monotonic() < deadline:
            now = self.quiet_now()
            if now is None or now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return now
            time.sleep(0.25)
        raise TimeoutError("the operator did not settle")


def writes_by_kind(text: str) -> str:
    """The operator's writes that changed something, by kind and verb (its own counter)."""
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("flipt_operator_api_writes_total{"):
            labels = dict(part.split("=", 1) for part in line[line.index("{") + 1:line.index("}")].split(","))
            key = f"{labels['kind'].strip(chr(34))} {labels['verb'].strip(chr(34))}"
            counts[key] = counts.get(key, 0) + float(line.rsplit(" ", 1)[1])
    return ", ".join(f"{key} {value:.0f}" for key, value in sorted(counts.items()))


def events_by_reason(api) -> str:
    """The Events in the cluster (what `kubectl describe` shows), by kind, type and reason, with
    their counts summed (a repeat bumps the count of the Event already there)."""
    counts: Counter[str] = Counter()
    for event in client.CoreV1Api(api).list_event_for_all_namespaces().items:
        counts[f"{event.involved_object.kind} {event.type} {event.reason}"] += event.count or 1
    return ", ".join(f"{key} {value}" for key, value in sorted(counts.items()))


def delta(after: dict, before: dict) -> dict:
    return {k: (None if after[k] is None or before[k] is None else after[k] - before[k]) for k in after}


def show(costs: dict) -> str:
    return ", ".join(f"{k} {'n/a' if v is None else f'{v:.0f}'}" for k, v in costs.items())


class Observer:
    """Watches the namespace's storages and ConfigMaps and records when each expected change
    shows: the storage's status.observedGeneration reaching the generation written, and its
    server's ConfigMap holding the new pollInterval."""

    def __init__(self, api) -> None:
        self.api = api
        self.lock = threading.Lock()
        self.expected: dict[int, tuple[int, str, float]] = {}  # set -> (generation, value, started)
        self.status_seen: dict[int, float] = {}
        self.config_seen: dict[int, float] = {}
        self.latest_status: dict[int, tuple[int, float]] = {}  # set -> (observedGeneration, when seen)
        self.latest_config: dict[int, tuple[list[str], float]] = {}  # set -> (ConfigMap texts, when seen)
        self.stopped = threading.Event()
        for target in (self._watch_storages, self._watch_config_maps):
            threading.Thread(target=target, daemon=True).start()

    def _watch_storages(self) -> None:
        api = client.CustomObjectsApi(self.api)

        def seen(obj):
            i = set_index(obj["metadata"]["name"])
            with self.lock:
                self.latest_status[i] = ((obj.get("status") or {}).get("observedGeneration", 0), time.monotonic())
                self._check(i)

        watch_all(lambda **kw: api.list_cluster_custom_object(GROUP, VERSION, "fliptstorages", **kw), seen,
                  self.stopped)

    def _watch_config_maps(self) -> None:
        core = client.CoreV1Api(self.api)

        def seen(obj):
            name = obj.metadata.name
            if not (name.startswith("srv-") and name.endswith("-config")):
                return
            i = set_index(name)
            with self.lock:
                self.latest_config[i] = (list((obj.data or {}).values()), time.monotonic())
                self._check(i)

        watch_all(core.list_config_map_for_all_namespaces, seen, self.stopped,
                  label_selector="app.kubernetes.io/managed-by=flipt-operator")

    def _check(self, i: int) -> None:
        """Under the lock: whether the latest states seen show set i's expected change. (The
        operator may answer before this process has recorded what it expects: the states are
        kept for that, and checked again once the expectation is there.)"""
        want = self.expected.get(i)
        if want is None:
            return
        generation, value, _ = want
        status, config = self.latest_status.get(i), self.latest_config.get(i)
        if i not in self.status_seen and status and status[0] >= generation:
            self.status_seen[i] = status[1]
        if i not in self.config_seen and config and any(
                f'"{value}"' in text or f": {value}\n" in text for text in config[0]):
            self.config_seen[i] = config[1]

    def change(self, i: int, value: str) -> None:
        started = time.monotonic()
        stored = client.CustomObjectsApi(self.api).patch_namespaced_custom_object(
            GROUP, VERSION, namespace_of(i), "fliptstorages", f"flags-{i}", {"spec": {"git": {"pollInterval": value}}})
        with self.lock:
            self.status_seen.pop(i, None)
            self.config_seen.pop(i, None)
            self.expected[i] = (stored["metadata"]["generation"], value, started)
            self._check(i)

    def latency(self, i: int) -> float | None:
        with self.lock:
            _, _, started = self.expected[i]
            if i in self.status_seen and i in self.config_seen:
                return max(self.status_seen[i], self.config_seen[i]) - started
        return None

    def wait(self, sets: list[int], timeout: float = 120) -> list[float]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            latencies = [self.latency(i) for i in sets]
            if all(latency is not None for latency in latencies):
                return latencies  # type: ignore[return-value]
            time.sleep(0.02)
        raise TimeoutError(f"changes not shown: {[i for i in sets if self.latency(i) is None][:10]}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--namespaces", type=int, default=1, help="namespaces the sets are spread over")
    parser.add_argument("--floor-sample", type=int, default=0,
                        help="time this many of the floor's writes and scale (0: all of them)")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--changes", type=int, default=5, help="single changes, one at a time")
    parser.add_argument("--burst", type=int, default=0, help="changes spread over 10 s (0: skip)")
    parser.add_argument("--unrelated", type=int, default=200, help="unrelated Secrets and ConfigMaps, each")
    parser.add_argument("--restart", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--operator-path", help="run the operator from this checkout's operator/ directory")
    parser.add_argument("--malloc-arena-max", default="2",
                        help="MALLOC_ARENA_MAX for the operator, as the image sets it ('' to leave unset)")
    parser.add_argument("--verbose-operator", action="store_true",
                        help="run the operator with --verbose (debug logs of every request: costs CPU)")
    parser.add_argument("--trace-memory", action="store_true", help="where the operator's memory goes (tracemalloc)")
    args = parser.parse_args()
    if args.namespaces > 1:
        NAMESPACES[:] = [f"bench-{k}" for k in range(args.namespaces)]
    build_apiserver()
    work = Path(tempfile.mkdtemp(prefix="flipt-bench-"))
    env = {"FLIPT_OPERATOR_SYNC_POLL_SECONDS": "3600"}
    if args.malloc_arena_max:
        env["MALLOC_ARENA_MAX"] = args.malloc_arena_max
    if args.operator_path:
        env["PYTHONPATH"] = os.pathsep.join([str(Path(args.operator_path).resolve()), os.environ.get("PYTHONPATH", "")])
    if args.trace_memory:
        (work / "trace").mkdir()
        env["FLIPT_BENCH_TRACE_DIR"] = str(work / "trace")
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "benchmarks" / "memory_trace"),
                                             env.get("PYTHONPATH", os.environ.get("PYTHONPATH", ""))])
    lines: list[str] = []

    def say(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    # Every operator started is stopped however the run ends (one left running for 78 min once).
    with LocalCluster() as cluster, contextlib.ExitStack() as stops:
        api = cluster.api_client()
        apply_crds(ROOT / "crds", api_client=api)
        core = client.CoreV1Api(api)
        for ns in (*NAMESPACES, "floor"):
            core.create_namespace({"metadata": {"name": ns}})
        operator = start_operator(cluster.kubeconfig, work / "operator.log", env=env, verbose=args.verbose_operator)
        stops.callback(operator.stop)
        idle_hwm = vm_hwm_mb(operator.process.pid)
        if args.trace_memory:
            operator.process.send_signal(signal.SIGUSR2)  # imports done: trace from here on
        costs = Costs(operator)
        controller = StandInDeploymentControllerAllNamespaces(api)
        controller.start()
        ready = ReadyCounter(api)

        # 1. Ready
        started, cpu_started = time.monotonic(), cpu_seconds(operator.process.pid)
        with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
            list(pool.map(lambda i: create_set(api, namespace_of(i), i), range(args.count)))
        created = time.monotonic() - started
        while ready.count() < args.count:
            if time.monotonic() - started > args.timeout:
                print(f"timeout: {ready.count()}/{args.count} Ready", file=sys.stderr)
                return 1
            time.sleep(0.5)
        elapsed = time.monotonic() - started
        operator_cpu = cpu_seconds(operator.process.pid) - cpu_started
        ready.stopped.set()
        passes_to_ready = costs.read()["passes"]
        say(f"sets: {args.count} (Secret, FliptCredential, git FliptStorage, FliptEnvironment with its own server)"
            f" in {len(NAMESPACES)} namespace(s)")
        say(f"time to create them: {created:.1f} s; time until all {args.count} environments Ready: {elapsed:.1f} s"
            f" ({passes_to_ready:.0f} passes by then)")
        # One interpreter: past ~1 CPU-second per second the operator itself is the bottleneck.
        say(f"operator CPU until Ready: {operator_cpu:.1f} s user+system in {elapsed:.1f} s "
            f"({operator_cpu / elapsed:.0%} of one core){'; debug logging on' if args.verbose_operator else ''}")
        say(f"operator VmHWM: {vm_hwm_mb(operator.process.pid):.0f} MB with {4 * args.count} objects "
            f"(+{4 * args.count} children), {idle_hwm:.0f} MB when started in an empty cluster; VmRSS now "
            f"{vm_hwm_mb(operator.process.pid, 'VmRSS'):.0f} MB  (goal < 200 MB at 1,000 sets)")
        after_ready = costs.wait_quiet(timeout=max(600.0, args.count / 5))
        say(f"operator until settled: {show(after_ready)}; stand-in controller writes {controller.writes}")
        say(f"  its writes by kind: {writes_by_kind(operator.metrics())}")
        say(f"  Events by kind, type and reason: {events_by_reason(api)}")
        fixed_writes = 8 * args.count
        floor, floor_how = floor_seconds(api, "floor", fixed_writes, args.floor_sample)
        say(f"floor: {fixed_writes} plain ConfigMap creates (4 objects + 4 children per set), {WORKERS} workers: "
            f"{floor:.1f} s ({floor_how})")
        say(f"ratio (time to Ready / floor): {elapsed / floor:.2f}  (goal <= 2)")
        # The operator watches ConfigMaps too. Deleting thousands at once can outlast the API
        # server's 34 s request timeout (it goes on deleting): wait for it rather than fail.
        with contextlib.suppress(client.ApiException):
            core.delete_collection_namespaced_config_map("floor")
        while any(c.metadata.name.startswith("floor-")  # names sort before kube-root-ca.crt
                  for c in core.list_namespaced_config_map("floor", limit=1).items):
            time.sleep(1)
        costs.wait_quiet(timeout=max(120.0, args.count / 20))
        if args.trace_memory:
            operator.process.send_signal(signal.SIGUSR1)
            say("where the operator's memory went, everything Ready (tracemalloc):")
            for line in memory_owners(wait_for_file(work / "trace" / f"now-{operator.process.pid}.snapshot")):
                say(line)

        observer = Observer(api)
        # 3. single changes
        if args.changes:
            rng = random.Random(1)
            latencies, per_change = [], []
            for k in range(args.changes):
                i = rng.randrange(args.count)
                before = costs.wait_quiet()
                observer.change(i, f"{1000 + k}s")
                latencies += observer.wait([i])
                per_change.append(delta(costs.wait_quiet(), before))
            say(f"one change (pollInterval of one storage), {args.changes} times at N={args.count}: latency "
                f"median {statistics.median(latencies):.2f} s, max {max(latencies):.2f} s  (goal <= 0.5 s)")
            for k, cost in enumerate(per_change):
                say(f"  change {k}: {latencies[k]:.2f} s; {show(cost)}")

        # 4. burst
        if args.burst:
            before = costs.wait_quiet()
            sets = random.Random(2).sample(range(args.count), args.burst)
            burst_start = time.monotonic()
            for k, i in enumerate(sets):
                wait = burst_start + k * 10.0 / args.burst - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                observer.change(i, f"{2000 + k}s")
            latencies = observer.wait(sets, timeout=300)
            cost = delta(costs.wait_quiet(), before)
            say(f"burst: {args.burst} changes over 10 s at N={args.count}: latency median "
                f"{statistics.median(latencies):.2f} s, max {max(latencies):.2f} s  (goal max <= 2 s); {show(cost)}")
        observer.stopped.set()

        # 5. unrelated Secrets and ConfigMaps
        if args.unrelated:
            before = costs.wait_quiet()
            text = operator.metrics()
            ignored = sum(metric_value(text, "flipt_operator_watch_events_total", f'decision="ignored",kind="{k}"')
                          for k in ("Secret", "ConfigMap"))
            with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
                list(pool.map(lambda i: core.create_namespaced_secret(
                    namespace_of(i), {"metadata": {"name": f"unrelated-{i}"},
                                      "data": {"k": base64.b64encode(b"v").decode()}}),
                    range(args.unrelated)))
                list(pool.map(lambda i: core.create_namespaced_config_map(
                    namespace_of(i), {"metadata": {"name": f"unrelated-{i}"}, "data": {"k": "v"}}),
                    range(args.unrelated)))
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:  # every event decided (counted as ignored)
                text = operator.metrics()
                now = sum(metric_value(text, "flipt_operator_watch_events_total", f'decision="ignored",kind="{k}"')
                          for k in ("Secret", "ConfigMap"))
                if now - ignored >= 2 * args.unrelated:
                    break
                time.sleep(0.25)
            cost = delta(costs.wait_quiet(), before)
            say(f"unrelated: {args.unrelated} Secrets + {args.unrelated} ConfigMaps created: {show(cost)}  (goal: 0 passes)")
        controller.stopped.set()
        say(f"operator VmHWM at the end: {vm_hwm_mb(operator.process.pid):.0f} MB")

        # 6. restart
        if args.restart:
            operator.stop()
            second = start_operator(cluster.kubeconfig, work / "operator2.log", env=env,
                                    verbose=args.verbose_operator)
            stops.callback(second.stop)
            if args.trace_memory:
                second.process.send_signal(signal.SIGUSR2)
            peaks = PeakTracker(second)
            peaks.start()
            second_costs = Costs(second)
            deadline = time.monotonic() + 300
            while metric_value(second.metrics(), "flipt_operator_reconciles_total", 'kind="Namespace"') < 1:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            resync = second_costs.wait_quiet(quiet=5)
            peaks.stopped.set()
            say(f"restarted operator resyncing unchanged objects: {show(resync)}  (goal: 0 changes written); "
                f"VmHWM {vm_hwm_mb(second.process.pid):.0f} MB, VmRSS {vm_hwm_mb(second.process.pid, 'VmRSS'):.0f} MB")
            say(f"  its VmHWM over the restart: {peaks.summary()}")
            if args.trace_memory:
                peak = work / "trace" / f"peak-{second.process.pid}.snapshot"
                if not peak.exists():  # never past 20 MB traced: now is as good
                    second.process.send_signal(signal.SIGUSR1)
                    peak = wait_for_file(work / "trace" / f"now-{second.process.pid}.snapshot")
                say("where the restarted operator's memory went at its peak (tracemalloc):")
                for line in memory_owners(peak):
                    say(line)
            second.stop()
        else:
            operator.stop()
    print(f"(operator logs in {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
