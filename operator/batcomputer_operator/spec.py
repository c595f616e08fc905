"""A BatModel's spec as a validated, immutable value.

The CRD schema already rejects bad manifests at admission; this second check
exists because a BatModel may come from an older CRD revision, and an operator
that builds Deployments from unchecked input would fail far from the cause.
"""

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import semver

from batcomputer_bundle.names import DIGEST_PATTERN, PICKLE_FILES
from batcomputer_operator.rollout_spec import RolloutError, RolloutSpec, parse_rollout

SHA256_FILES = PICKLE_FILES
MAX_REPLICAS = 100
_HEX = frozenset("0123456789abcdef")
_DIGEST = re.compile(DIGEST_PATTERN)


class SpecError(ValueError):
    """The spec cannot be served; the message names the field."""


@dataclass(frozen=True)
class IngressSpec:
    path: str
    host: str | None = None
    class_name: str | None = None


@dataclass(frozen=True)
class BatModelSpec:
    version: str
    source_uri: str
    credentials_secret: str | None = None
    digest: str | None = None  # the bundle digest, sha256:<hex> of bundle.json
    sha256: tuple[tuple[str, str], ...] = ()
    replicas: int = 1
    resources: Mapping[str, Any] | None = None
    fetch_resources: Mapping[str, Any] | None = None
    ingress: IngressSpec | None = None
    server_image: str | None = None
    rollout: RolloutSpec = dataclasses.field(default_factory=RolloutSpec)


def parse_spec(raw: Mapping[str, Any]) -> BatModelSpec:
    version = raw.get("version")
    if not isinstance(version, str) or not semver.Version.is_valid(version):
        raise SpecError(f"spec.version: {version!r} is not a SemVer 2.0.0 version such as 1.4.2")
    source = raw.get("source")
    if not isinstance(source, Mapping):
        raise SpecError("spec.source: required, with a uri")
    uri = source.get("uri")
    if not isinstance(uri, str) or not uri.startswith(("http://", "https://")):
        raise SpecError(f"spec.source.uri: {uri!r} is not an http(s) URL")
    return BatModelSpec(
        version=version,
        source_uri=uri,
        credentials_secret=source.get("credentialsSecret") or None,
        digest=_parse_digest(source.get("digest")),
        sha256=_parse_sha256(source.get("sha256") or {}),
        replicas=_parse_replicas(raw.get("replicas", 1)),
        resources=_parse_resources(raw.get("resources"), "spec.resources"),
        fetch_resources=_parse_resources(_fetch(raw).get("resources"), "spec.fetch.resources"),
        ingress=_parse_ingress(raw.get("ingress")),
        server_image=raw.get("serverImage") or None,
        rollout=_parse_rollout(raw),
    )


def _parse_digest(digest: Any) -> str | None:
    if digest is None:
        return None
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise SpecError(
            f"spec.source.digest: {digest!r:.90} is not sha256: and 64 lowercase hex characters"
        )
    return digest


def _parse_sha256(pins: Any) -> tuple[tuple[str, str], ...]:
    """Pins fail closed: a key that names no bundle file (a typo such as modle.pkl) would
    otherwise leave the file it meant unpinned, so it refuses the whole spec."""
    if not isinstance(pins, Mapping):
        raise SpecError(f"spec.source.sha256: {pins!r} is not a map of file name to digest")
    unknown = sorted(set(pins) - set(SHA256_FILES))
    if unknown:
        raise SpecError(
            f"spec.source.sha256: unknown file {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(SHA256_FILES)}"
        )
    for file, digest in pins.items():
        if not isinstance(digest, str) or len(digest) != 64 or not set(digest) <= _HEX:
            raise SpecError(f"spec.source.sha256.{file}: not 64 lowercase hex characters")
    return tuple((file, pins[file]) for file in SHA256_FILES if file in pins)


def _parse_replicas(replicas: Any) -> int:
    if isinstance(replicas, bool) or not isinstance(replicas, int):
        raise SpecError(f"spec.replicas: {replicas!r} is not an integer")
    if not 0 <= replicas <= MAX_REPLICAS:
        raise SpecError(f"spec.replicas: {replicas} is outside 0..{MAX_REPLICAS}")
    return replicas


def _fetch(raw: Mapping[str, Any]) -> Mapping[str, Any]:
    fetch = raw.get("fetch") or {}
    if not isinstance(fetch, Mapping):
        raise SpecError(f"spec.fetch: {fetch!r} is not an object with resources")
    return fetch


def _parse_resources(resources: Any, field: str) -> Mapping[str, Any] | None:
    if not resources:
        return None
    if not isinstance(resources, Mapping) or set(resources) - {"limits", "requests"}:
        raise SpecError(f"{field}: only limits and requests are allowed")
    for key, value in resources.items():
        if value and not isinstance(value, Mapping):
            raise SpecError(f"{field}.{key}: {value!r} is not a map of resource to quantity")
    return {key: dict(value) for key, value in resources.items() if value}


def _parse_ingress(ingress: Any) -> IngressSpec | None:
    if ingress is None:
        return None
    path = ingress.get("path") if isinstance(ingress, Mapping) else None
    if not isinstance(path, str) or not path.startswith("/"):
        raise SpecError(f"spec.ingress.path: {path!r} must start with '/'")
    return IngressSpec(
        path=path, host=ingress.get("host") or None, class_name=ingress.get("className") or None
    )


def _parse_rollout(raw: Mapping[str, Any]) -> RolloutSpec:
    try:
        return parse_rollout(raw.get("rollout"), replicas=raw.get("replicas", 1))
    except RolloutError as error:
        raise SpecError(str(error)) from None
