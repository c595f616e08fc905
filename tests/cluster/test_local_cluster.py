"""The cluster really runs workloads: init containers, Services, pod-to-Service traffic, logs.

Plus the network hygiene the local cluster promises: pod traffic never leaves
the bridge, image pulls never leave loopback, the kubelet never probes a
cloud metadata address.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from batcomputer_dev import cluster_config as cfg
from batcomputer_dev import cluster_host as host
from batcomputer_dev.cluster import LocalCluster
from batcomputer_dev.pytest_cluster import KubeCluster

# 192.0.2.0/24 is TEST-NET-1 (RFC 5737): never routed anywhere, safe to aim at.
UNROUTABLE_ADDRESS = "192.0.2.1"
WEB_PORT = 8080
GREETING = "hello from the init container"

# The main container: a plain file server over what the init container wrote.
WEB_SCRIPT = f"""
import functools, http.server
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory="/shared")
print("batcomputer-test web server listening on {WEB_PORT}", flush=True)
http.server.ThreadingHTTPServer(("0.0.0.0", {WEB_PORT}), handler).serve_forever()
"""

# A one-shot client pod: reaches the web Service and the API Service by ClusterIP.
CLIENT_SCRIPT = """
import json, os, socket, time, urllib.request
report = {}
web = "http://" + os.environ["WEB_SERVICE_HOST"] + ":" + os.environ["WEB_SERVICE_PORT"]
# kube-proxy programs a new Service's rules within a second or two; retry until then.
for _ in range(40):
    try:
        with urllib.request.urlopen(web + "/greeting.txt", timeout=10) as response:
            report["web_body"] = response.read().decode()
        break
    except OSError:
        time.sleep(0.5)
api = (os.environ["KUBERNETES_SERVICE_HOST"], int(os.environ["KUBERNETES_SERVICE_PORT"]))
socket.create_connection(api, timeout=5).close()
report["api_reachable"] = True
print("REPORT " + json.dumps(report), flush=True)
"""

# A one-shot pod that tries an address beyond the bridge and reports how that ended.
EGRESS_SCRIPT = f"""
import json, socket, time
report = {{}}
started = time.monotonic()
try:
    socket.create_connection(("{UNROUTABLE_ADDRESS}", 80), timeout=5).close()
    report["outside"] = "connected"
except OSError as error:
    report["outside"] = type(error).__name__ + ": " + str(error)
report["outside_seconds"] = time.monotonic() - started
print("REPORT " + json.dumps(report), flush=True)
"""


def pod_security() -> dict:
    return {
        "runAsNonRoot": True,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }


def web_manifests(namespace: str, image: str) -> list[dict]:
    labels = {"app": "web"}
    container_common = {
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "securityContext": pod_security(),
        "volumeMounts": [{"name": "shared", "mountPath": "/shared"}],
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "automountServiceAccountToken": False,
                    "initContainers": [
                        {
                            **container_common,
                            "name": "prepare",
                            "command": ["python3", "-c"],
                            "args": [
                                "open('/shared/greeting.txt', 'w').write("
                                f"{GREETING!r}); print('prepared', flush=True)"
                            ],
                        }
                    ],
                    "containers": [
                        {
                            **container_common,
                            "name": "web",
                            "command": ["python3", "-c"],
                            "args": [WEB_SCRIPT],
                            "ports": [{"containerPort": WEB_PORT}],
                            "readinessProbe": {
                                "httpGet": {"path": "/greeting.txt", "port": WEB_PORT},
                                "periodSeconds": 1,
                            },
                        }
                    ],
                    "volumes": [{"name": "shared", "emptyDir": {}}],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {
            "selector": labels,
            "ports": [{"port": 80, "targetPort": WEB_PORT, "protocol": "TCP"}],
        },
    }
    return [deployment, service]


def one_shot_pod(namespace: str, name: str, image: str, script: str, policy: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "imagePullPolicy": policy,
                    "command": ["python3", "-c"],
                    "args": [script],
                    "securityContext": pod_security(),
                }
            ],
        },
    }


def apply(cluster: KubeCluster, *documents: dict) -> None:
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        input_text=json.dumps({"kind": "List", "apiVersion": "v1", "items": list(documents)}),
    )


def wait_for(what: str, condition, timeout: float = 120) -> float:
    started = time.monotonic()
    while True:
        if condition():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.5)


def pod_phase(cluster: KubeCluster, namespace: str, name: str) -> str:
    return cluster.kubectl("get", "pod", "-n", namespace, name, "-o", "jsonpath={.status.phase}")


@pytest.fixture(scope="module")
def namespace(kube_cluster: KubeCluster) -> Iterator[str]:
    name = f"bc-cluster-test-{uuid.uuid4().hex[:6]}"
    kube_cluster.kubectl("create", "namespace", name)
    yield name
    kube_cluster.kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture(scope="module")
def web(kube_cluster: KubeCluster, namespace: str, server_image: str) -> dict:
    created = time.monotonic()
    apply(kube_cluster, *web_manifests(namespace, server_image))
    kube_cluster.kubectl("rollout", "status", "-n", namespace, "deployment/web", "--timeout=180s")
    seconds = time.monotonic() - created
    print(f"\nweb Deployment (init + main container) ready {seconds:.1f} s after apply")
    cluster_ip = kube_cluster.kubectl(
        "get", "service", "-n", namespace, "web", "-o", "jsonpath={.spec.clusterIP}"
    )
    return {"cluster_ip": cluster_ip, "ready_seconds": seconds}


def run_report_pod(
    cluster: KubeCluster, namespace: str, name: str, image: str, script: str
) -> dict:
    apply(cluster, one_shot_pod(namespace, name, image, script, "IfNotPresent"))
    wait_for(
        f"pod {name} to finish",
        lambda: pod_phase(cluster, namespace, name) in ("Succeeded", "Failed"),
    )
    logs = cluster.kubectl("logs", "-n", namespace, name)
    assert pod_phase(cluster, namespace, name) == "Succeeded", logs
    (line,) = [line for line in logs.splitlines() if line.startswith("REPORT ")]
    return json.loads(line.removeprefix("REPORT "))


@pytest.fixture(scope="module")
def client_report(kube_cluster: KubeCluster, namespace: str, server_image: str, web: dict) -> dict:
    return run_report_pod(kube_cluster, namespace, "client", server_image, CLIENT_SCRIPT)


def test_deployment_with_init_container_from_a_local_image_runs(kube_cluster, namespace, web):
    pods = json.loads(
        kube_cluster.kubectl("get", "pods", "-n", namespace, "-l", "app=web", "-o", "json")
    )
    (pod,) = pods["items"]
    assert pod["status"]["phase"] == "Running"
    (init,) = pod["status"]["initContainerStatuses"]
    assert init["state"]["terminated"]["exitCode"] == 0
    assert pod["status"]["containerStatuses"][0]["ready"] is True


def fetch_from_host(url: str) -> str | None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=10) as response:
            return response.read().decode()
    except OSError:
        return None


def test_cluster_ip_service_answers_from_the_host(web):
    url = f"http://{web['cluster_ip']}/greeting.txt"
    # kube-proxy programs a new Service's rules within a second or two.
    wait_for("the Service rules", lambda: fetch_from_host(url) is not None, timeout=30)
    assert fetch_from_host(url) == GREETING


def test_a_pod_reaches_other_services_by_cluster_ip(client_report):
    assert client_report.get("web_body") == GREETING, client_report
    assert client_report["api_reachable"] is True


def test_kubectl_logs_shows_container_output(kube_cluster, namespace, web):
    assert "listening on 8080" in kube_cluster.kubectl("logs", "-n", namespace, "deployment/web")
    init_logs = kube_cluster.kubectl("logs", "-n", namespace, "deployment/web", "-c", "prepare")
    assert "prepared" in init_logs


def refused_outbound_packets() -> int:
    counters = subprocess.run(
        ["iptables", "-L", cfg.FORWARD_CHAIN, "-v", "-n", "-x"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    (outbound,) = [line for line in counters if f"{cfg.BRIDGE_NAME} !{cfg.BRIDGE_NAME}" in line]
    return int(outbound.split()[0])


def test_pod_traffic_beyond_the_bridge_is_refused_at_once(
    kube_cluster, local_cluster, namespace, server_image
):
    refused_before = refused_outbound_packets()
    report = run_report_pod(kube_cluster, namespace, "egress", server_image, EGRESS_SCRIPT)
    assert report["outside"] != "connected"
    assert report["outside_seconds"] < 3, report
    # The refusal came from the isolation rule, not from a missing route in the pod.
    assert refused_outbound_packets() > refused_before


@pytest.fixture
def local_cluster(kube_cluster: KubeCluster) -> LocalCluster:
    if not kube_cluster.local:
        pytest.skip("host-level checks apply to the embedded local cluster only")
    return LocalCluster()


def test_forward_rule_isolates_the_pod_bridge(local_cluster):
    forward = subprocess.run(
        ["iptables", "-S", "FORWARD"], capture_output=True, text=True, check=True
    )
    assert forward.stdout.splitlines()[1] == f"-A FORWARD -j {cfg.FORWARD_CHAIN}"
    chain = subprocess.run(
        ["iptables", "-S", cfg.FORWARD_CHAIN], capture_output=True, text=True, check=True
    )
    assert (
        f"-A {cfg.FORWARD_CHAIN} -i {cfg.BRIDGE_NAME} ! -o {cfg.BRIDGE_NAME} -j REJECT"
        in chain.stdout
    )


def test_components_are_confined_to_loopback_and_the_bridge(local_cluster):
    cgroup_line = f"0::/{cfg.COMPONENT_CGROUP}"
    for component in cfg.COMPONENTS_IN_START_ORDER:
        pid = json.loads(local_cluster.paths.pid_file(component).read_text())["pid"]
        assert cgroup_line in Path(f"/proc/{pid}/cgroup").read_text().splitlines(), component
    for binary in ("iptables", "ip6tables"):
        output = subprocess.run(
            [binary, "-S", "OUTPUT"], capture_output=True, text=True, check=True
        ).stdout.splitlines()
        assert output[1].endswith(f"-j {cfg.EGRESS_CHAIN}"), (binary, output)
    # Zero refusals: no component (kubelet included) ever tried to reach a metadata
    # address, a registry or anything else beyond loopback and the bridge.
    assert host.refused_component_packets() == 0


def test_a_mistaken_image_pull_fails_on_loopback(kube_cluster, local_cluster, namespace):
    image = "ghcr.io/batcomputer/never-built:0.0.0"
    apply(kube_cluster, one_shot_pod(namespace, "mistaken-pull", image, "pass", "Always"))

    def pull_failure() -> str:
        statuses = kube_cluster.kubectl(
            "get", "pod", "-n", namespace, "mistaken-pull",
            "-o", "jsonpath={.status.containerStatuses[0].state.waiting.message}",
        )  # fmt: skip
        return statuses

    wait_for("the pull to fail", lambda: "127.0.0.1:9" in pull_failure(), timeout=60)
    containerd_log = local_cluster.paths.log_file("containerd").read_text()
    assert "ghcr.io/v2" not in containerd_log


def test_the_kubelet_never_mentions_cloud_metadata(local_cluster):
    log = local_cluster.paths.log_file("kubelet").read_text().lower()
    assert log, "kubelet log is empty"
    # What the in-tree credential providers log when linked in (pod specs in the
    # log may legitimately mention Azure storage, so the markers are specific).
    markers = (
        "169.254.169.254",
        "aws_credentials",
        "aws credentials",
        "ec2metadata",
        "credentialprovider",
        "metadata.google.internal",
    )
    for marker in markers:
        assert marker not in log, f"kubelet log mentions {marker!r}"
