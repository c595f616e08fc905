"""Rollout times of the BatModel operator on the local cluster, as a user sees them,
and its cost at scale.

    .venv/bin/python benchmarks/bench_operator.py [--rounds 3]
    .venv/bin/python benchmarks/bench_operator.py --models 1000 [--idle-seconds 300]

With --models N: N BatModels with replicas 0 (only the control plane works, no pod
starts) applied at once to one fresh namespace, with `batcomputer-operator` running
on this host against it. Prints the time from the start of the apply until every
model is Ready for its generation (and from the end of the apply), the CPU the
API server, controller manager, etcd, the operator and the whole machine used
meanwhile (in cores; the local cluster's control plane runs as host processes),
the operator's API requests per model by method (from its own /metrics) and the API server's
request counters by verb and resource (its /metrics, every client included, so
other load on a shared cluster shows up there), the operator's requests over an
idle stretch, its RSS, and how long one spec edit among the N takes to show in
status. --operator-source runs another checkout's operator (one without a metrics
endpoint: then only the API server's counters are printed).

Without --models, the rollout rounds:

Needs the local cluster up (`batcomputer-cluster up`). Builds and imports the
server image (layer cache), trains Titanic 1.0.0 and 1.0.1, publishes both to an
Azurite on the cluster's bridge, runs `batcomputer-operator` on this host
against one fresh namespace, and per round measures, from the API write:

* apply-to-Ready: `kubectl create` of a BatModel until Ready=True for its generation;
* version switch: a 1.0.0 -> 1.0.1 bump until Ready=True serving 1.0.1;
* rollback: 1.0.1 -> 1.0.0 once 1.0.1 serves (1.0.0 is retired by then: a full rollout);
* failure detected: a bump to a version whose blob is missing until Stalled=True;
* revert of the failure: back to the serving version until Ready=True again.

Prints figures only, with the load average (other load on the machine moves them).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

from batcomputer_dev import cluster_config as cfg
from batcomputer_dev import images
from batcomputer_dev.azurite import free_port, start_azurite, stop_azurite
from batcomputer_dev.cluster import LocalCluster
from batcomputer_dev.k8s_build import ensure_binaries
from batcomputer_dev.pytest_azurite import AzuriteService

BIN = Path(sys.executable).parent
CRD = Path(__file__).resolve().parents[1] / "crds" / "batmodels.batcomputer.io.yaml"


class _Kubectl:
    def __init__(self, kubeconfig: Path) -> None:
        self.command = [str(ensure_binaries() / "kubectl"), f"--kubeconfig={kubeconfig}"]

    def __call__(self, *args: str, input_text: str | None = None) -> str:
        return subprocess.run(
            [*self.command, *args], input=input_text, capture_output=True, text=True, check=True
        ).stdout

    def model(self, name: str, namespace: str) -> dict:
        return json.loads(self("get", "batmodel", name, "-n", namespace, "-o", "json"))


def _conditions(model: dict) -> dict[str, str]:
    status = model.get("status") or {}
    if status.get("observedGeneration") != model["metadata"]["generation"]:
        return {}
    return {c["type"]: c["status"] for c in status.get("conditions") or []}


def _serving(version: str):
    def done(model: dict) -> bool:
        serving = (model.get("status") or {}).get("servingVersion")
        return _conditions(model).get("Ready") == "True" and serving == version

    return done


def _desired(version: str):
    """Ready for its generation with `version` desired (replicas 0: nothing serves)."""

    def done(model: dict) -> bool:
        desired = (model.get("status") or {}).get("desiredVersion")
        return _conditions(model).get("Ready") == "True" and desired == version

    return done


def _stalled(model: dict) -> bool:
    return _conditions(model).get("Stalled") == "True"


def _time_until(kubectl: _Kubectl, name: str, namespace: str, done) -> float:
    started = time.monotonic()
    while not done(kubectl.model(name, namespace)):
        if time.monotonic() - started > 300:
            raise SystemExit(f"{name}: no result after 300 s")
        time.sleep(0.1)
    return time.monotonic() - started


def _publish(azurite: AzuriteService, container: str, bundle: Path) -> dict:
    printed = subprocess.run(
        [str(BIN / "batcomputer-publish"), str(bundle), "--to", azurite.folder_uri(container)],
        env=dict(os.environ, AZURE_STORAGE_CONNECTION_STRING=azurite.connection_string),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    spec = yaml.safe_load(printed)["spec"]
    spec["source"]["credentialsSecret"] = "blob-reader"
    return spec


def _train(out: Path, version: str) -> Path:
    subprocess.run(
        [
            *(str(BIN / "batcomputer-train"), "titanic", "--version", version),
            *("--out", str(out), "--quiet"),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return out / "titanic" / version


def _rounds(kubectl: _Kubectl, namespace: str, specs: dict[str, dict], rounds: int) -> dict:
    good, newer = specs["1.0.0"], specs["1.0.1"]
    missing = {**good, "version": "9.9.9"}
    missing["source"] = {**good["source"], "uri": good["source"]["uri"] + "-missing"}
    steps = [
        ("version switch", newer, _serving("1.0.1")),
        ("rollback", good, _serving("1.0.0")),
        ("failure detected", missing, _stalled),
        ("failure revert", good, _serving("1.0.0")),
    ]
    figures: dict[str, list[float]] = {"apply-to-Ready": []}
    for round_ in range(rounds):
        name = f"bench-{round_}"
        manifest = {
            "apiVersion": "batcomputer.io/v1alpha1",
            "kind": "BatModel",
            "metadata": {"name": name, "namespace": namespace},
            "spec": good,
        }
        kubectl("create", "-f", "-", input_text=yaml.safe_dump(manifest))
        figures["apply-to-Ready"].append(_time_until(kubectl, name, namespace, _serving("1.0.0")))
        for label, spec, done in steps:
            patch = json.dumps({"spec": spec})
            kubectl("patch", "batmodel", name, "-n", namespace, "--type", "merge", "-p", patch)
            figures.setdefault(label, []).append(_time_until(kubectl, name, namespace, done))
        kubectl("delete", "batmodel", name, "-n", namespace, "--wait=false")
    return figures


_SAMPLE = re.compile(r"^(\w+)\{(.*)\} ([0-9.e+-]+)$")


def _samples(text: str, metric: str) -> list[tuple[dict[str, str], float]]:
    found = []
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match and match.group(1) == metric:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2)))
            found.append((labels, float(match.group(3))))
    return found


def _apiserver_requests(kubectl: _Kubectl) -> collections.Counter:
    counted: collections.Counter = collections.Counter()
    for labels, value in _samples(kubectl("get", "--raw", "/metrics"), "apiserver_request_total"):
        if labels.get("resource") in (
            "batmodels",
            "deployments",
            "services",
            "ingresses",
            "pods",
            "endpointslices",
            "endpoints",
            "events",
        ):
            key = (labels.get("verb", "?"), labels["resource"], labels.get("subresource", ""))
            counted[key] += value
    return counted


def _operator_requests(metrics_port: int) -> collections.Counter:
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    counted: collections.Counter = collections.Counter()
    for labels, value in _samples(text, "rest_client_requests_total"):
        counted[labels["method"]] += value
    return counted


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# The local cluster's control plane runs as host processes, so its CPU is read from /proc.
_CONTROL_PLANE = ("kube-apiserver", "kube-controller-manager", "etcd")
_TICKS = os.sysconf("SC_CLK_TCK")


def _busy_processes(operator_pid: int) -> dict[str, list[int]]:
    """Pids of the control plane's processes by name, and the operator's."""
    found: dict[str, list[int]] = {"operator": [operator_pid]}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            program = (entry / "cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        name = os.path.basename(program.decode(errors="replace"))
        if name in _CONTROL_PLANE:
            found.setdefault(name, []).append(int(entry.name))
    return found


def _cpu_seconds(processes: dict[str, list[int]]) -> dict[str, float]:
    """CPU time (user + system) each named group has used, and the machine's busy time."""
    used = {}
    for name, pids in processes.items():
        used[name] = 0.0
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            used[name] += (int(fields[11]) + int(fields[12])) / _TICKS
    times = [int(value) for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    used["whole machine"] = (sum(times) - times[3] - times[4]) / _TICKS
    return used


def _ready_count(kubectl: _Kubectl, namespace: str) -> tuple[int, int]:
    models = json.loads(kubectl("get", "batmodels", "-n", namespace, "-o", "json"))["items"]
    return sum(_conditions(m).get("Ready") == "True" for m in models), len(models)


def _scale_manifest(namespace: str, count: int, uri: str) -> str:
    docs = [
        {
            "apiVersion": "batcomputer.io/v1alpha1",
            "kind": "BatModel",
            "metadata": {"name": f"scale-{i:04d}", "namespace": namespace},
            "spec": {"version": "1.0.0", "replicas": 0, "source": {"uri": uri}},
        }
        for i in range(count)
    ]
    return yaml.safe_dump_all(docs)


def _wait_all_ready(kubectl: _Kubectl, namespace: str, count: int, timeout: float) -> None:
    started = time.monotonic()
    while _ready_count(kubectl, namespace)[0] < count:
        if time.monotonic() - started > timeout:
            ready, total = _ready_count(kubectl, namespace)
            raise SystemExit(f"only {ready}/{total} Ready after {timeout:.0f} s")
        time.sleep(1)


def _delta(after: collections.Counter, before: collections.Counter) -> dict:
    return {key: after[key] - before[key] for key in after if after[key] - before[key] > 0}


class _Figures(dict):
    """Figures printed as they are measured, so a late failure loses none."""

    def __setitem__(self, label: str, value: str) -> None:
        super().__setitem__(label, value)
        print(f"  {label}: {value}", flush=True)


def _scale(kubectl: _Kubectl, local: LocalCluster, args: argparse.Namespace) -> None:
    namespace = f"bench-scale-{secrets.token_hex(3)}"
    metrics_port = free_port()
    kubectl("create", "namespace", namespace)
    log = Path(tempfile.mkdtemp(prefix="bench-operator-")) / "operator.log"
    command = [
        *(sys.executable, "-c", "from batcomputer_operator.cli import main; main()"),
        *("--namespace", namespace, "--liveness-port", str(free_port())),
    ]
    env = dict(os.environ, KUBECONFIG=str(local.paths.kubeconfig))
    own = args.operator_source is None
    if own:
        command += ["--metrics-port", str(metrics_port)]
    else:
        source = Path(args.operator_source).resolve()
        env["PYTHONPATH"] = f"{source / 'operator'}:{source / 'server-image'}"
    with log.open("w") as out:
        operator = subprocess.Popen(
            command,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    figures = _Figures()
    print(f"{args.models} BatModels (replicas 0) in one namespace of the local cluster", flush=True)
    try:
        time.sleep(10)  # watches open, caches synced
        own_before = _operator_requests(metrics_port) if own else None
        server_before = _apiserver_requests(kubectl)
        manifest = _scale_manifest(namespace, args.models, "http://10.244.0.1:10000/none/1.0.0")
        busy = _busy_processes(operator.pid)
        cpu_before = _cpu_seconds(busy)
        started = time.monotonic()
        kubectl("apply", "-f", "-", input_text=manifest)
        applied = time.monotonic()
        _wait_all_ready(kubectl, namespace, args.models, timeout=1800)
        done = time.monotonic()
        cpu = _cpu_seconds(busy)
        figures["all Ready from apply start"] = f"{done - started:.1f} s"
        figures["all Ready after apply finished"] = f"{done - applied:.1f} s"
        figures["apply itself"] = f"{applied - started:.1f} s"
        for name, seconds in cpu.items():
            cores = (seconds - cpu_before[name]) / (done - started)
            figures[f"CPU of {name} from apply start to all Ready"] = f"{cores:.2f} cores"
        time.sleep(5)  # late status writes land
        server = _delta(_apiserver_requests(kubectl), server_before)
        for (verb, resource, sub), value in sorted(server.items()):
            name = f"{resource}/{sub}" if sub else resource
            figures[f"API server {verb} {name} per model"] = f"{value / args.models:.2f}"
        if own_before is not None:
            own = _delta(_operator_requests(metrics_port), own_before)
            for method, value in sorted(own.items()):
                figures[f"operator {method} per model"] = f"{value / args.models:.2f}"
        figures["RSS after rollout"] = f"{_rss_mb(operator.pid):.0f} MB"

        idle_before = _operator_requests(metrics_port) if own else None
        idle_server = _apiserver_requests(kubectl)
        time.sleep(args.idle_seconds)
        if idle_before is not None:
            idle = _delta(_operator_requests(metrics_port), idle_before)
            figures[f"operator requests in {args.idle_seconds} s idle"] = str(
                {k: int(v) for k, v in idle.items()} or 0
            )
        server_idle = _delta(_apiserver_requests(kubectl), idle_server)
        figures[f"API server requests in {args.idle_seconds} s idle (all clients)"] = str(
            {"/".join(filter(None, k[:2])): int(v) for k, v in server_idle.items()}
        )
        figures["RSS after idle"] = f"{_rss_mb(operator.pid):.0f} MB"

        name = f"scale-{args.models // 2:04d}"
        patch = json.dumps({"spec": {"version": "1.0.1"}})
        edited = time.monotonic()
        kubectl("patch", "batmodel", name, "-n", namespace, "--type", "merge", "-p", patch)
        _time_until(kubectl, name, namespace, _desired("1.0.1"))
        figures["one edit to Ready in status"] = f"{time.monotonic() - edited:.2f} s"
    finally:
        operator.terminate()
        operator.wait(timeout=60)
        kubectl("delete", "namespace", namespace, "--wait=false", "--ignore-not-found")
    print(f"  operator log: {log}")
    print("  load average: " + " ".join(f"{load:.2f}" for load in os.getloadavg()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", type=int, default=0, help="run the scale scenario")
    parser.add_argument("--idle-seconds", type=int, default=300)
    parser.add_argument("--operator-source", help="a checkout whose operator to run instead")
    args = parser.parse_args()
    rounds = args.rounds

    local = LocalCluster()
    if not local.healthy():
        raise SystemExit("the local cluster is not up: run `batcomputer-cluster up` first")
    kubectl = _Kubectl(local.paths.kubeconfig)
    if args.models:
        kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
        _scale(kubectl, local, args)
        return
    (server_image,) = images.build_images(["server"])
    images.import_into_cluster(server_image, local.paths)
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))

    work = Path(tempfile.mkdtemp(prefix="bench-operator-"))
    azurite = AzuriteService(
        start_azurite(cfg.BRIDGE_IP, free_port(cfg.BRIDGE_IP), work / "azurite")
    )
    namespace = f"bench-operator-{secrets.token_hex(3)}"
    operator = None
    try:
        container = azurite.make_container("bench")
        specs = {v: _publish(azurite, container, _train(work, v)) for v in ("1.0.0", "1.0.1")}
        kubectl("create", "namespace", namespace)
        kubectl(
            *("create", "secret", "generic", "blob-reader", "-n", namespace),
            f"--from-literal=connectionString={azurite.connection_string}",
        )
        operator = subprocess.Popen(
            [
                *(str(BIN / "batcomputer-operator"), "--namespace", namespace),
                *("--server-image", server_image, "--liveness-port", str(free_port())),
                *("--metrics-port", str(free_port())),
            ],
            env=dict(os.environ, KUBECONFIG=str(local.paths.kubeconfig)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        figures = _rounds(kubectl, namespace, specs, rounds)
    finally:
        if operator is not None:
            operator.terminate()
            operator.wait(timeout=30)
        kubectl("delete", "namespace", namespace, "--wait=false", "--ignore-not-found")
        stop_azurite(azurite.process)

    print(f"BatModel rollouts on the local cluster, {rounds} rounds (seconds from the API write)")
    for label, values in figures.items():
        print(
            f"  {label:17s} median {statistics.median(values):5.1f}"
            f"  min {min(values):5.1f}  max {max(values):5.1f}"
        )
    print("  load average: " + " ".join(f"{load:.2f}" for load in os.getloadavg()))


if __name__ == "__main__":
    main()
