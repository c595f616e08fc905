"""Kubernetes names and label values derived from a model name and a SemVer version.

Two distinct versions must never map to the same Deployment name or label value
(the Service selector relies on it), so any lossy rewrite of a version carries a
hash of the exact version.
"""

import hashlib
import re

MAX_NAME = 63
MANAGED_BY = "batcomputer-operator"
MODEL_LABEL = "batcomputer.io/model"
VERSION_LABEL = "batcomputer.io/version"
VERSION_ANNOTATION = "batcomputer.io/version"
SERVING_ANNOTATION = "batcomputer.io/serving-version"
# On the pod template (so on every pod made from it): our own digest of that template.
TEMPLATE_HASH_ANNOTATION = "batcomputer.io/template-hash"

_PLAIN_VERSION = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+$")
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


def _hash8(version: str) -> str:
    return hashlib.sha256(version.encode()).hexdigest()[:8]


def version_label(version: str) -> str:
    """A label value naming exactly this version.

    '+' (build metadata) is the only SemVer character a label value cannot hold,
    and '_' cannot occur in SemVer, so the swap keeps versions apart.
    """
    value = version.replace("+", "_")
    if len(value) <= MAX_NAME and _LABEL_VALUE.match(value):
        return value
    head = value[: MAX_NAME - 9].rstrip("-_.")
    return f"{head}-{_hash8(version)}"


def deployment_name(model: str, version: str) -> str:
    """A DNS label such as crime-v1-4-2; odd or long versions get a hash suffix."""
    slug = re.sub(r"[^a-z0-9]+", "-", version.lower()).strip("-")
    name = f"{model}-v{slug}"
    if _PLAIN_VERSION.match(version) and len(name) <= MAX_NAME:
        return name
    suffix = f"-{_hash8(version)}"
    return f"{name[: MAX_NAME - len(suffix)].rstrip('-')}{suffix}"


def shadow_config_name(deployment: str) -> str:
    """The ConfigMap of one version's shadow settings, named after its Deployment (a
    ConfigMap name may be longer than a DNS label)."""
    return f"{deployment}-shadow"


def selector_labels(model: str, version: str) -> dict[str, str]:
    return {MODEL_LABEL: model, VERSION_LABEL: version_label(version)}


def child_labels(model: str, version: str) -> dict[str, str]:
    """Labels on every child; the Service and Ingress carry the version they route to."""
    return {
        "app.kubernetes.io/name": "batcomputer-model",
        "app.kubernetes.io/instance": model,
        "app.kubernetes.io/component": "model-server",
        "app.kubernetes.io/part-of": "batcomputer",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/version": version_label(version),
        MODEL_LABEL: model,
        VERSION_LABEL: version_label(version),
    }
