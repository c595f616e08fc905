"""A real Prometheus (Debian's ``prometheus``) for tests: started on a free loopback port
with a given configuration and rule groups, queried over its HTTP API, stopped after."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml


@dataclass(frozen=True)
class Prometheus:
    url: str
    log: Path

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = httpx.get(self.url + "/api/v1/query", params={"query": expr}).json()
        if answer.get("status") != "success":
            raise AssertionError(f"query failed: {expr}: {answer}")
        return answer["data"]["result"]

    def get(self, path: str) -> Any:
        return httpx.get(self.url + path).json()["data"]

    def wait_until(self, check: Callable[[], Any], what: str, timeout: float = 90) -> Any:
        """Poll ``check`` until it returns something true; fail with Prometheus's log tail."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value = check()
            except httpx.TransportError:
                value = None
            if value:
                return value
            time.sleep(0.5)
        tail = self.log.read_text(errors="replace")[-3000:]
        raise AssertionError(f"timed out waiting for {what}; Prometheus log:\n{tail}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def dashboard_queries(dashboard: Path, rate_interval: str = "30s") -> dict[str, str]:
    """Every panel target's PromQL, with Grafana's variables as Grafana fills them for 'All'."""
    queries = {}
    for panel in json.loads(dashboard.read_text())["panels"]:
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", rate_interval)
            for variable in ("$namespace", "$model_version", "$model"):
                expr = expr.replace(variable, ".*")
            queries[f"{panel['title']} ({target['refId']})"] = expr
    return queries


@contextmanager
def running_prometheus(
    workdir: Path,
    scrape_configs: list[dict[str, Any]],
    rule_groups: list[Mapping[str, Any]],
    interval: str = "1s",
) -> Iterator[Prometheus]:
    binary = shutil.which("prometheus")
    if binary is None:
        raise AssertionError("prometheus is missing: devtools/bootstrap.sh installs Debian's")
    workdir.mkdir(parents=True, exist_ok=True)
    rules = workdir / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": list(rule_groups)}, sort_keys=False))
    config = workdir / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": interval, "evaluation_interval": interval},
                "rule_files": [str(rules)],
                "scrape_configs": scrape_configs,
            },
            sort_keys=False,
        )
    )
    port = _free_port()
    log = workdir / "prometheus.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    prometheus = Prometheus(f"http://127.0.0.1:{port}", log)
    try:
        prometheus.wait_until(
            lambda: httpx.get(prometheus.url + "/-/ready").status_code == 200, "Prometheus ready"
        )
        yield prometheus
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
