"""A PodMonitor as the scrape configuration the Prometheus Operator makes of it.

The tests run Debian's plain ``prometheus`` against the local cluster, without the
Prometheus Operator; this turns the chart's PodMonitors into the ``scrape_configs``
entries the operator would generate (keep by the selector's labels and the named port,
drop finished pods, the namespace/pod/container/job/endpoint target labels, then the
PodMonitor's own relabellings), so the live Prometheus sees exactly the series a
Prometheus Operator installation would.

Debian builds Prometheus without Kubernetes service discovery, so discovery is played
by a file: ``pod_targets`` writes, for each container port of each pod, the target and
the ``__meta_kubernetes_pod_*`` labels Kubernetes pod discovery gives it, and the same
relabelling runs over them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

_RELABEL_KEYS = {
    "sourceLabels": "source_labels",
    "separator": "separator",
    "targetLabel": "target_label",
    "regex": "regex",
    "modulus": "modulus",
    "replacement": "replacement",
    "action": "action",
}


def _meta_label(label: str) -> str:
    """``app.kubernetes.io/name`` → ``app_kubernetes_io_name``, as pod discovery spells it."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", label)


def _relabelling(rule: Mapping[str, Any]) -> dict[str, Any]:
    translated = {_RELABEL_KEYS[key]: value for key, value in rule.items() if key in _RELABEL_KEYS}
    if "action" in translated:
        translated["action"] = str(translated["action"]).lower()
    return translated


def _labels(prefix: str, values: Mapping[str, str]) -> dict[str, str]:
    labels = {}
    for key, value in values.items():
        labels[f"__meta_kubernetes_pod_{prefix}_{_meta_label(key)}"] = value
        labels[f"__meta_kubernetes_pod_{prefix}present_{_meta_label(key)}"] = "true"
    return labels


def pod_targets(pods: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """File discovery target groups for pods (``kubectl get pods -o json`` items), one per
    declared container port, labelled as Kubernetes pod discovery labels them."""
    groups = []
    for pod in pods:
        metadata, status = pod["metadata"], pod.get("status", {})
        ip = status.get("podIP")
        if not ip:
            continue
        common = {
            "__meta_kubernetes_namespace": metadata["namespace"],
            "__meta_kubernetes_pod_name": metadata["name"],
            "__meta_kubernetes_pod_ip": ip,
            "__meta_kubernetes_pod_phase": status.get("phase", ""),
            **_labels("label", metadata.get("labels", {})),
            **_labels("annotation", metadata.get("annotations", {})),
        }
        for container in pod["spec"]["containers"]:
            for port in container.get("ports", []):
                groups.append(
                    {
                        "targets": [f"{ip}:{port['containerPort']}"],
                        "labels": {
                            **common,
                            "__meta_kubernetes_pod_container_name": container["name"],
                            "__meta_kubernetes_pod_container_port_name": port.get("name", ""),
                            "__meta_kubernetes_pod_container_port_number": str(
                                port["containerPort"]
                            ),
                        },
                    }
                )
    return groups


def scrape_configs(pod_monitor: Mapping[str, Any], targets_file: str) -> list[dict[str, Any]]:
    """One scrape config per endpoint of ``pod_monitor``, discovering from ``targets_file``
    (written from ``pod_targets``)."""
    metadata, spec = pod_monitor["metadata"], pod_monitor["spec"]
    discovery = {"files": [targets_file], "refresh_interval": "5s"}
    keep_selected = [
        {
            "action": "keep",
            "source_labels": [
                f"__meta_kubernetes_pod_label_{_meta_label(label)}",
                f"__meta_kubernetes_pod_labelpresent_{_meta_label(label)}",
            ],
            "regex": f"({re.escape(str(value))});true",
        }
        for label, value in spec["selector"].get("matchLabels", {}).items()
    ]
    job = f"{metadata['namespace']}/{metadata['name']}"
    configs = []
    for index, endpoint in enumerate(spec["podMetricsEndpoints"]):
        relabel = [
            *keep_selected,
            {
                "action": "keep",
                "source_labels": ["__meta_kubernetes_pod_container_port_name"],
                "regex": re.escape(endpoint["port"]),
            },
            {
                "action": "drop",
                "source_labels": ["__meta_kubernetes_pod_phase"],
                "regex": "(Failed|Succeeded)",
            },
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {
                "source_labels": ["__meta_kubernetes_pod_container_name"],
                "target_label": "container",
            },
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            {"target_label": "job", "replacement": job},
            {"target_label": "endpoint", "replacement": endpoint["port"]},
            *(_relabelling(rule) for rule in endpoint.get("relabelings", [])),
        ]
        config: dict[str, Any] = {
            "job_name": f"podMonitor/{job}/{index}",
            "metrics_path": endpoint.get("path", "/metrics"),
            "file_sd_configs": [discovery],
            "relabel_configs": relabel,
        }
        if "interval" in endpoint:
            config["scrape_interval"] = endpoint["interval"]
        configs.append(config)
    return configs
