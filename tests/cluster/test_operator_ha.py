"""Two operators, one active: the standby takes over the Lease once the active one is
killed, and finishes what it left pending. Also: the operator's own metrics, and an
idle operator that makes no API request.

Models here have replicas 0 (no pod starts), so only the control plane works and
the times measured are the operator's.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from _operator_support import install_crd, settled

from batcomputer_dev.azurite import free_port
from batcomputer_dev.kube_testing import kubectl_json, wait_for

BIN = Path(sys.executable).parent
URI = "http://10.244.0.1:10000/devstoreaccount1/nowhere/1.0.0"
LEASE = "batcomputer-operator-test"


@pytest.fixture(scope="module")
def namespace(kube_cluster) -> Iterator[str]:
    install_crd(kube_cluster)
    name = f"bc-ha-{secrets.token_hex(3)}"
    kube_cluster.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        kube_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


class _Operator:
    def __init__(self, cluster, namespace: str, log: Path) -> None:
        self.liveness, self.metrics = free_port(), free_port()
        self.log = log
        with log.open("w") as out:
            self.process = subprocess.Popen(
                [
                    str(BIN / "batcomputer-operator"),
                    *("--namespace", namespace, "--liveness-port", str(self.liveness)),
                    *("--metrics-port", str(self.metrics)),
                    *("--leader-election-namespace", namespace),
                    *("--leader-election-id", LEASE),
                ],
                env=dict(os.environ, KUBECONFIG=str(cluster.kubeconfig)),
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def scrape(self) -> dict[str, float]:
        """Every sample of the metrics endpoint, by its line's name and labels."""
        url = f"http://127.0.0.1:{self.metrics}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, value = line.rsplit(" ", 1)
                samples[key] = float(value)
        return samples

    def leading(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"operator exited {self.process.returncode}: {self.log}")
        try:
            key = f'leader_election_master_status{{name="{LEASE}"}}'
            return self.scrape().get(key) == 1.0
        except OSError:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextlib.contextmanager
def _operators(cluster, namespace: str, logs: Path, count: int) -> Iterator[list[_Operator]]:
    started = [_Operator(cluster, namespace, logs / f"operator-{i}.log") for i in range(count)]
    try:
        yield started
    finally:
        for operator in started:
            operator.stop()
        for operator in started:
            print(operator.log.read_text()[-5000:])


def _create(cluster, namespace: str, name: str) -> None:
    model = {
        "apiVersion": "batcomputer.io/v1alpha1",
        "kind": "BatModel",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"version": "1.0.0", "replicas": 0, "source": {"uri": URI}},
    }
    cluster.kubectl("create", "-f", "-", input_text=yaml.safe_dump(model))


def _ready(cluster, namespace: str, name: str, timeout: float = 60) -> None:
    wait_for(
        lambda: kubectl_json(cluster, "get", "batmodel", name, "-n", namespace),
        lambda model: settled(model, "Ready", "Stopped"),
        f"BatModel {name} Ready",
        timeout=timeout,
    )


def _requests(operator: _Operator) -> dict[str, float]:
    pattern = re.compile(
        r'^rest_client_requests_total\{code="(\w+)",host="[^"]*",method="(\w+)"\}$'
    )
    counted: dict[str, float] = {}
    for key, value in operator.scrape().items():
        match = pattern.match(key)
        if match:
            counted[match.group(2)] = counted.get(match.group(2), 0) + value
    return counted


def test_the_standby_takes_over_when_the_active_operator_is_killed(
    kube_cluster, namespace, tmp_path
):
    with _operators(kube_cluster, namespace, tmp_path, 2) as operators:
        wait_for(lambda: [o.leading() for o in operators], any, "a leader", timeout=60)
        (active,) = [o for o in operators if o.leading()]
        (standby,) = [o for o in operators if o is not active]
        _create(kube_cluster, namespace, "before")
        _ready(kube_cluster, namespace, "before")
        assert not standby.leading()

        os.kill(active.process.pid, signal.SIGKILL)
        killed = time.monotonic()
        _create(kube_cluster, namespace, "pending")
        wait_for(standby.leading, bool, "the standby to take the Lease", timeout=40)
        took_over = time.monotonic() - killed
        _ready(kube_cluster, namespace, "pending")
        done = time.monotonic() - killed
        print(
            f"failover: Lease taken {took_over:.1f} s after the kill,"
            f" pending model Ready {done:.1f} s"
        )
        # leaseDuration 15 s from the last renewal, checked every retryPeriod (2 s).
        assert took_over <= 15 + 2 + 5


def test_metrics_count_passes_and_an_idle_operator_makes_no_request(
    kube_cluster, namespace, tmp_path
):
    with _operators(kube_cluster, namespace, tmp_path, 1) as (operator,):
        wait_for(operator.leading, bool, "the Lease", timeout=60)
        _create(kube_cluster, namespace, "counted")
        _ready(kube_cluster, namespace, "counted")
        samples = operator.scrape()
        passes = 'controller_runtime_reconcile_total{controller="batmodel",result="success"}'
        assert samples[passes] >= 1
        assert (
            samples['controller_runtime_reconcile_time_seconds_count{controller="batmodel"}'] >= 1
        )
        assert samples['batcomputer_operator_cache_objects{kind="Service"}'] >= 1
        assert _requests(operator)["PATCH"] >= 3  # Service, Deployment, status
        # The last watch events of the rollout may still wake the model once more.
        depth = 'workqueue_depth{name="batmodel"}'
        wait_for(lambda: operator.scrape()[depth], lambda queued: queued == 0, "an idle queue")

        time.sleep(5)  # the last watch events of the rollout
        before = _requests(operator)
        time.sleep(20)
        after = _requests(operator)
        # Lease renewals (one GET and one PUT per 2 s) are all an idle operator sends.
        extra = {m: after[m] - before.get(m, 0) for m in after if m not in ("GET", "PUT")}
        assert all(value == 0 for value in extra.values()), extra
        renewals = after.get("PUT", 0) - before.get("PUT", 0)
        assert after.get("GET", 0) - before.get("GET", 0) <= renewals + 1
