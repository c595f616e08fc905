"""Publishing a bundle folder to blob storage as an immutable, semantically versioned release.

The bundle lands under ``<folder>/<model>/<version>/``. ``bundle.json`` is uploaded last:
the fetcher reads it first, so a half-published version is never fetchable.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import semver
import yaml

from batcomputer_bundle import bundle
from batcomputer_bundle.blobstore import BlobFolder, BlobNotFoundError, BlobStore

API_VERSION = "batcomputer.io/v1alpha1"
_MODEL_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class PublishError(Exception):
    """Publishing was refused; the message says why and what to do."""


@dataclass(frozen=True)
class Published:
    manifest: dict[str, Any]
    folder: BlobFolder
    replaced: bool
    digest: str  # the bundle digest: sha256:<hex> of the bundle.json uploaded


def release_of(manifest: Mapping[str, Any]) -> tuple[str, semver.Version]:
    """The model name and parsed version, refused when unfit for a folder and a BatModel."""
    name, version = manifest["name"], manifest["version"]
    if not isinstance(name, str) or not _MODEL_NAME.match(name):
        raise PublishError(
            f"bundle name {name!r} cannot name a BatModel: use 1-63 lowercase letters, "
            "digits and '-', starting and ending with a letter or digit"
        )
    try:
        return name, semver.Version.parse(str(version))
    except ValueError:
        raise PublishError(
            f"bundle version {version!r} is not a SemVer 2.0.0 version such as 1.4.2"
        ) from None


def check_schema_rule(
    name: str, version: semver.Version, digest: str, published: Mapping[str, str]
) -> None:
    """Refuse a MINOR/PATCH release whose API differs from the nearest lower published one.

    ``published`` maps each published version of the model to its schema digest.
    """
    lower = [v for v in map(semver.Version.parse, published) if v < version]
    if not lower:
        return
    previous = max(lower)
    previous_digest = published[str(previous)]
    if previous.major == version.major and previous_digest != digest:
        raise PublishError(
            f"{name} {version} changes the scoring API (schema digest {digest} differs from "
            f"{previous_digest} of published {previous}); a changed API needs a MAJOR bump: "
            f"publish it as {previous.bump_major()} or later"
        )


def batmodel_manifest(
    manifest: Mapping[str, Any],
    source_uri: str,
    digest: str,
    namespace: str | None = None,
    credentials_secret: str | None = None,
) -> dict[str, Any]:
    """A BatModel serving this bundle, pinned by its bundle digest (which covers every file)."""
    metadata: dict[str, Any] = {"name": manifest["name"]}
    if namespace:
        metadata["namespace"] = namespace
    source: dict[str, Any] = {"uri": source_uri, "digest": digest}
    if credentials_secret:
        source["credentialsSecret"] = credentials_secret
    return {
        "apiVersion": API_VERSION,
        "kind": "BatModel",
        "metadata": metadata,
        "spec": {
            "version": str(manifest["version"]),
            "source": source,
        },
    }


def render_yaml(document: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(document), sort_keys=False, default_flow_style=False)


def _published_schemas(models: BlobStore, name: str) -> dict[str, str]:
    """Schema digest of every published (bundle.json present) SemVer version of a model."""
    model_store = models.child(name)
    schemas: dict[str, str] = {}
    for version in model_store.subfolders():
        if not semver.Version.is_valid(version):
            continue
        try:
            text = model_store.child(version).read_bytes(bundle.MANIFEST_FILE)
        except BlobNotFoundError:
            continue  # an interrupted publish: files without a manifest are not a release
        try:
            schemas[version] = bundle.parse_manifest(text)["schema_digest"]
        except bundle.BundleError as error:
            raise PublishError(
                f"published {name} {version} cannot be compared with: {error}"
            ) from None
    return schemas


def publish(
    folder: Path,
    destination: BlobStore,
    *,
    force: bool = False,
    on_bytes: Callable[[int], None] | None = None,
) -> Published:
    """Upload a verified bundle folder under ``<destination>/<model>/<version>/``."""
    manifest = bundle.verify_folder(folder)
    digest = bundle.bundle_digest((folder / bundle.MANIFEST_FILE).read_bytes())
    name, version = release_of(manifest)
    destination.ensure_container()
    target = destination.child(name, str(version))
    replaced = target.exists(bundle.MANIFEST_FILE)
    if replaced and not force:
        raise PublishError(
            f"{name} {version} is already published at {target.folder.display()}; versions are "
            "immutable: publish a new version (or --force to replace it)"
        )
    published = _published_schemas(destination, name)
    published.pop(str(version), None)
    check_schema_rule(name, version, manifest["schema_digest"], published)
    if replaced:
        # Unfetchable while its files change, instead of a manifest describing other files.
        target.delete(bundle.MANIFEST_FILE)
    for file_name in [*manifest["files"], bundle.MANIFEST_FILE]:
        target.upload_file(folder / file_name, file_name, progress=_deltas(on_bytes))
    return Published(manifest=manifest, folder=target.folder, replaced=replaced, digest=digest)


def upload_bytes(folder: Path) -> int:
    """How many bytes ``publish`` will send for a bundle folder (for a progress bar)."""
    names = [*bundle.verify_folder(folder)["files"], bundle.MANIFEST_FILE]
    return sum((folder / name).stat().st_size for name in names)


def _deltas(on_bytes: Callable[[int], None] | None) -> Callable[[int, int | None], None] | None:
    """The SDK reports bytes sent so far per file; a progress bar wants increments."""
    if on_bytes is None:
        return None
    sent_before = 0

    def report(sent: int, _total: int | None) -> None:
        nonlocal sent_before
        on_bytes(sent - sent_before)
        sent_before = sent

    return report
