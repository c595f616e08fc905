"""The Pod Security Standards' ``restricted`` profile (Kubernetes 1.25+, ``latest``), as rules
over a pod spec.

The API server's PodSecurity admission enforces these from 1.23 on; the local cluster
runs 1.20, which has none, so the tests hold the pods the operator and the chart make to
the same rules here. Each rule follows the profile's published table
(kubernetes.io/docs/concepts/security/pod-security-standards); a violation names the
container and the field.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

ALLOWED_VOLUME_SOURCES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
ALLOWED_SECCOMP = frozenset({"RuntimeDefault", "Localhost"})
ALLOWED_ADDED_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
_SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t"})


def pod_spec_of(manifest: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The pod spec a workload manifest makes pods from (None for other kinds)."""
    kind = manifest.get("kind")
    if kind == "Pod":
        return manifest.get("spec") or {}
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        return manifest["spec"]["template"].get("spec") or {}
    if kind == "CronJob":
        return manifest["spec"]["jobTemplate"]["spec"]["template"].get("spec") or {}
    return None


def _containers(pod: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        yield from pod.get(key) or []


def restricted_violations(pod: Mapping[str, Any]) -> list[str]:
    """Every way ``pod`` breaks the restricted profile; empty when it meets it."""
    return [*_pod_level(pod), *(v for c in _containers(pod) for v in _container_level(pod, c))]


def _pod_level(pod: Mapping[str, Any]) -> Iterator[str]:
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            yield f"spec.{field} must be unset or false"
    for volume in pod.get("volumes") or []:
        sources = set(volume) - {"name"}
        if not sources <= ALLOWED_VOLUME_SOURCES:
            yield f"volume {volume.get('name')}: {', '.join(sorted(sources))} not allowed"
    context = pod.get("securityContext") or {}
    if context.get("runAsUser") == 0:
        yield "spec.securityContext.runAsUser must not be 0"
    for sysctl in context.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            yield f"spec.securityContext.sysctls: {sysctl.get('name')} is not a safe sysctl"
    yield from _selinux("spec.securityContext", context)


def _selinux(where: str, context: Mapping[str, Any]) -> Iterator[str]:
    options = context.get("seLinuxOptions") or {}
    if options.get("type", "") not in _SELINUX_TYPES:
        yield f"{where}.seLinuxOptions.type {options['type']!r} not allowed"
    for field in ("user", "role"):
        if options.get(field):
            yield f"{where}.seLinuxOptions.{field} must be unset"


def _container_level(pod: Mapping[str, Any], container: Mapping[str, Any]) -> Iterator[str]:
    where = f"container {container.get('name')}"
    pod_context = pod.get("securityContext") or {}
    context = container.get("securityContext") or {}
    if context.get("privileged"):
        yield f"{where}: privileged must be unset or false"
    if context.get("allowPrivilegeEscalation") is not False:
        yield f"{where}: allowPrivilegeEscalation must be false"
    if context.get("runAsNonRoot", pod_context.get("runAsNonRoot")) is not True:
        yield f"{where}: runAsNonRoot must be true (container or pod)"
    if context.get("runAsUser") == 0:
        yield f"{where}: runAsUser must not be 0"
    seccomp = (context.get("seccompProfile") or pod_context.get("seccompProfile") or {}).get("type")
    if seccomp not in ALLOWED_SECCOMP:
        yield f"{where}: seccompProfile.type must be RuntimeDefault or Localhost, is {seccomp}"
    capabilities = context.get("capabilities") or {}
    if "ALL" not in (capabilities.get("drop") or []):
        yield f"{where}: capabilities.drop must include ALL"
    added = set(capabilities.get("add") or []) - ALLOWED_ADDED_CAPABILITIES
    if added:
        yield f"{where}: capabilities.add may hold only NET_BIND_SERVICE, has {sorted(added)}"
    if any(port.get("hostPort") for port in container.get("ports") or []):
        yield f"{where}: hostPort must be unset or 0"
    if context.get("procMount", "Default") != "Default":
        yield f"{where}: procMount must be Default"
    yield from _selinux(f"{where}.securityContext", context)
