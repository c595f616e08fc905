"""Pure builders: a BatModel spec becomes Deployment, Service and Ingress manifests.

Every manifest is complete (the operator server-side applies it whole), so a
field left out here is a field the operator does not own.
"""

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from batcomputer_bundle.names import CONNECTION_STRING_FILE, SAS_TOKEN_FILE
from batcomputer_operator import diff
from batcomputer_operator.config import OperatorConfig, format_binary_quantity
from batcomputer_operator.naming import (
    SERVING_ANNOTATION,
    TEMPLATE_HASH_ANNOTATION,
    VERSION_ANNOTATION,
    child_labels,
    deployment_name,
    selector_labels,
    shadow_config_name,
)
from batcomputer_operator.spec import BatModelSpec

GROUP_VERSION = "batcomputer.io/v1alpha1"
SERVER_PORT = 8000
SERVICE_PORT = 80
BUNDLE_VOLUME = "/bundle"
# The fetcher assembles the bundle next to this folder, on the same volume, and renames it
# into place: the pod's root filesystem is read-only, and a mount point cannot be renamed.
BUNDLE_DIR = f"{BUNDLE_VOLUME}/verified"
# Where the server looks for its shadow settings (`--shadow-config`): a file of the
# version's own ConfigMap, which the operator writes only while this version serves
# and a Shadow rollout analyses a candidate. The ConfigMap is optional: without it the
# folder is empty and the server copies nothing.
SHADOW_DIR = "/etc/batcomputer/shadow"
SHADOW_FILE = "settings.json"
# The server's /tmp holds the Prometheus multiprocess files (a few sparse 1 MiB files per
# worker process, more for each worker that was restarted) and, where /dev/shm is not
# writable, gunicorn's heartbeat files; requests are handled in memory, never spooled
# there. 256Mi is far above that, and low enough that a runaway writer gets its pod
# evicted rather than filling the node's disk.
TMP_SIZE_LIMIT = "256Mi"
RUN_AS = 10001
DRAIN_SECONDS = 5

CREDENTIALS_DIR = "/var/run/secrets/batcomputer.io/blob"
# Files readable by the pod's group (fsGroup) only, never written.
CREDENTIALS_MODE = 0o440
# Sized for the bundled models (a bundle of a few MiB): the fetcher streams each blob to
# disk, the server holds the model once per worker. CPU has requests but no limits: a
# limit throttles a busy server's latency while idle cores wait.
DEFAULT_FETCH_RESOURCES = {
    "requests": {"cpu": "100m", "memory": "128Mi"},
    "limits": {"memory": "256Mi"},
}
DEFAULT_SERVER_RESOURCES = {
    "requests": {"cpu": "100m", "memory": "256Mi"},
    "limits": {"memory": "512Mi"},
}


@dataclass(frozen=True)
class Owner:
    """The BatModel the children belong to."""

    name: str
    namespace: str
    uid: str


def _metadata(owner: Owner, name: str, version: str, annotations: dict[str, str]) -> dict:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": child_labels(owner.name, version),
        "annotations": annotations,
        "ownerReferences": [
            {
                "apiVersion": GROUP_VERSION,
                "kind": "BatModel",
                "name": owner.name,
                "uid": owner.uid,
                "controller": True,
            }
        ],
    }


def _container_security() -> dict:
    return {
        "runAsNonRoot": True,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _fetch_container(spec: BatModelSpec, image: str, bundle_size_limit: int) -> dict:
    args = ["--source", spec.source_uri, "--dest", BUNDLE_DIR]
    args += ["--max-bytes", str(bundle_size_limit)]
    if spec.digest is not None:
        args += ["--digest", spec.digest]
    for file, digest in spec.sha256:
        args += ["--sha256", f"{file}={digest}"]
    container: dict[str, Any] = {
        "name": "fetch",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["batcomputer-fetch"],
        "args": args,
        "volumeMounts": [
            {"name": "bundle", "mountPath": BUNDLE_VOLUME},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        # Nothing secret in the environment: credentials arrive as files.
        "env": [],
        "resources": _resources(spec.fetch_resources, DEFAULT_FETCH_RESOURCES),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": _container_security(),
    }
    if spec.credentials_secret:
        container["args"] = [*args, "--credentials-dir", CREDENTIALS_DIR]
        container["volumeMounts"] = [
            *container["volumeMounts"],
            {"name": "blob-credentials", "mountPath": CREDENTIALS_DIR, "readOnly": True},
        ]
    return container


def _resources(given: Mapping[str, Any] | None, default: Mapping[str, Any]) -> dict:
    """The BatModel's requests and limits as given, else the defaults: merging the two could
    leave a default request above a limit the user set."""
    chosen = given or default
    return {key: dict(value) for key, value in chosen.items()}


def _server_container(spec: BatModelSpec, image: str) -> dict:
    container: dict[str, Any] = {
        "name": "server",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["batcomputer-server"],
        "args": [
            *("--bundle", BUNDLE_DIR, "--port", str(SERVER_PORT)),
            *("--shadow-config", f"{SHADOW_DIR}/{SHADOW_FILE}"),
        ],
        "ports": [{"name": "http", "containerPort": SERVER_PORT, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "http"},
            "periodSeconds": 2,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "initialDelaySeconds": 15,
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
        # A retired version's pod keeps answering until every node's kube-proxy has
        # followed the Service to the new version (no exec-free sleep action before 1.29).
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(DRAIN_SECONDS)]}}},
        "volumeMounts": [
            {"name": "bundle", "mountPath": BUNDLE_VOLUME, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "shadow", "mountPath": SHADOW_DIR, "readOnly": True},
        ],
        "env": [],
        "resources": _resources(spec.resources, DEFAULT_SERVER_RESOURCES),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": _container_security(),
    }
    if spec.ingress is not None:
        container["env"] = [{"name": "BATCOMPUTER_ROOT_PATH", "value": spec.ingress.path}]
    return container


def deployment(owner: Owner, spec: BatModelSpec, config: OperatorConfig) -> dict:
    """The Deployment of one version; its name and selector never change for that version."""
    image = spec.server_image or config.server_image
    selector = selector_labels(owner.name, spec.version)
    version_annotation = {VERSION_ANNOTATION: spec.version}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(
            owner, deployment_name(owner.name, spec.version), spec.version, version_annotation
        ),
        "spec": {
            "replicas": spec.replicas,
            "revisionHistoryLimit": 2,
            "progressDeadlineSeconds": config.progress_deadline_seconds,
            # In-place changes (resources, image) keep every old pod until a new one is ready.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "selector": {"matchLabels": selector},
            "template": _stamped(
                {
                    "metadata": {
                        "labels": child_labels(owner.name, spec.version),
                        "annotations": version_annotation,
                    },
                    "spec": _pod_spec(
                        spec,
                        image,
                        shadow_config_name(deployment_name(owner.name, spec.version)),
                        config.bundle_size_limit,
                    ),
                }
            ),
        },
    }


def _pod_spec(spec: BatModelSpec, image: str, shadow_config: str, bundle_size_limit: int) -> dict:
    # The fetcher refuses a bundle over the limit with a clear InvalidBundle; the volume's
    # own limit is the kubelet's backstop (it evicts a pod whose volume outgrows it).
    bundle_volume = {"sizeLimit": format_binary_quantity(bundle_size_limit)}
    return {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "initContainers": [_fetch_container(spec, image, bundle_size_limit)],
        "containers": [_server_container(spec, image)],
        "volumes": [
            {"name": "bundle", "emptyDir": bundle_volume},
            {"name": "tmp", "emptyDir": {"sizeLimit": TMP_SIZE_LIMIT}},
            {"name": "shadow", "configMap": {"name": shadow_config, "optional": True}},
            *_credentials_volume(spec),
        ],
    }


def _credentials_volume(spec: BatModelSpec) -> list[dict]:
    if not spec.credentials_secret:
        return []
    # optional: a missing Secret (or key) means anonymous access, which storage refuses
    # with a clear AuthenticationFailed instead of a pod stuck in ContainerCreating.
    secret = {
        "secretName": spec.credentials_secret,
        "optional": True,
        "defaultMode": CREDENTIALS_MODE,
        "items": [
            {"key": CONNECTION_STRING_FILE, "path": CONNECTION_STRING_FILE},
            {"key": SAS_TOKEN_FILE, "path": SAS_TOKEN_FILE},
        ],
    }
    return [{"name": "blob-credentials", "secret": secret}]


def _stamped(template: dict) -> dict:
    """The pod template with its own digest as an annotation, which every pod made from it
    carries: the status rules tell the current template's pods from those being replaced
    by it (Kubernetes' pod-template-hash cannot be computed from a manifest)."""
    canonical = json.dumps(diff.canonical(template), sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:16]
    annotations = {**template["metadata"]["annotations"], TEMPLATE_HASH_ANNOTATION: digest}
    return {**template, "metadata": {**template["metadata"], "annotations": annotations}}


def shadow_config(owner: Owner, version: str, settings: Mapping[str, Any]) -> dict:
    """The ConfigMap of `version`'s shadow settings file (`rollout.shadow_settings`), which
    its pods mount: `{}` copies nothing."""
    name = shadow_config_name(deployment_name(owner.name, version))
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(owner, name, version, {VERSION_ANNOTATION: version}),
        "data": {SHADOW_FILE: json.dumps(dict(settings), sort_keys=True)},
    }


def service(owner: Owner, serving_version: str) -> dict:
    """The stable Service, routing to the pods of `serving_version` only."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(
            owner, owner.name, serving_version, {SERVING_ANNOTATION: serving_version}
        ),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(owner.name, serving_version),
            # protocol is spelled out: server-side apply on 1.20 keys ports by (port, protocol).
            "ports": [
                {"name": "http", "port": SERVICE_PORT, "targetPort": SERVER_PORT, "protocol": "TCP"}
            ],
        },
    }


def ingress(owner: Owner, spec: BatModelSpec, config: OperatorConfig, version: str) -> dict | None:
    if spec.ingress is None:
        return None
    rule: dict[str, Any] = {
        "http": {
            "paths": [
                {
                    "path": spec.ingress.path,
                    "pathType": "Prefix",
                    "backend": {"service": {"name": owner.name, "port": {"number": SERVICE_PORT}}},
                }
            ]
        }
    }
    host = spec.ingress.host or config.ingress_host
    if host:
        rule = {"host": host, **rule}
    ingress_spec: dict[str, Any] = {"rules": [rule]}
    class_name = spec.ingress.class_name or config.ingress_class
    if class_name:
        ingress_spec = {"ingressClassName": class_name, **ingress_spec}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": _metadata(owner, owner.name, version, {SERVING_ANNOTATION: version}),
        "spec": ingress_spec,
    }


def service_url(owner: Owner) -> str:
    return f"http://{owner.name}.{owner.namespace}.svc/api"
