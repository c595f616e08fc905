"""The fetcher: copy a bundle from blob storage into a folder, verified, file by file.

``bundle.json`` is read first and written last, so a reader of the destination folder
either sees a complete, verified bundle or no manifest at all. Every other file goes to
``<file>.partial``, is checked against the manifest's sha256 (and any pinned digest),
then renamed into place.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batcomputer_bundle import bundle
from batcomputer_bundle.blob_uri import BlobUriError
from batcomputer_bundle.blobstore import (
    BlobNotFoundError,
    BlobStore,
    BlobStoreError,
    StorageAuthError,
)
from batcomputer_bundle.names import (
    EXIT_AUTH,
    EXIT_DIGEST,
    EXIT_INVALID_BUNDLE,
    EXIT_NOT_FOUND,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
)

_PARTIAL_SUFFIX = ".partial"


class DigestMismatchError(Exception):
    """A file's content (or the manifest) disagrees with the digest it must have."""


class PinError(ValueError):
    """A ``--sha256 FILE=HEX`` argument is malformed."""


@dataclass(frozen=True)
class FetchResult:
    name: str
    version: str
    files: dict[str, int]


def parse_pins(arguments: Iterable[str]) -> dict[str, str]:
    """``["model.pkl=<hex>", ...]`` → ``{"model.pkl": "<hex>"}`` (lower-case hex)."""
    pins: dict[str, str] = {}
    for argument in arguments:
        name, separator, digest = argument.partition("=")
        name, digest = name.strip(), digest.strip().lower()
        if not separator or not name:
            raise PinError(f"--sha256 must be FILE=HEX (e.g. model.pkl=<64 hex>), got {name!r}")
        if not bundle.is_sha256_hex(digest):
            raise PinError(f"--sha256 for {name} must be 64 hex digits, got {len(digest)} chars")
        if pins.get(name, digest) != digest:
            raise PinError(f"--sha256 gives two different digests for {name}")
        pins[name] = digest
    return pins


_EXIT_CODES: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], int], ...] = (
    ((BlobUriError, PinError), EXIT_USAGE),
    (BlobNotFoundError, EXIT_NOT_FOUND),
    (StorageAuthError, EXIT_AUTH),
    (DigestMismatchError, EXIT_DIGEST),
    (BlobStoreError, EXIT_UNREACHABLE),
    (bundle.BundleError, EXIT_INVALID_BUNDLE),
)
FETCH_ERRORS = (BlobUriError, PinError, BlobStoreError, DigestMismatchError, bundle.BundleError)


def exit_code_for(error: Exception) -> int:
    """The documented exit code (contract §3) for one of ``FETCH_ERRORS``."""
    return next(code for kinds, code in _EXIT_CODES if isinstance(error, kinds))


def expected_files(manifest: Mapping[str, Any], pins: Mapping[str, str]) -> dict[str, str]:
    """File → sha256 it must have; a pin that disagrees with the manifest fails closed."""
    try:
        return bundle.expected_digests(manifest, pins)
    except bundle.BundleError as error:
        # Only the pins can disagree here: parse_manifest has vetted the manifest itself.
        raise DigestMismatchError(str(error)) from None


def _download_verified(store: BlobStore, dest: Path, name: str, digest: str) -> int:
    target = dest / name
    partial = dest / (name + _PARTIAL_SUFFIX)
    try:
        with partial.open("wb") as stream:
            size = store.download_to(name, stream)
        if bundle.sha256_file(partial) != digest:
            raise DigestMismatchError(f"sha256 mismatch for {name}")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return size


def fetch_bundle(
    store: BlobStore,
    dest: Path,
    pins: Mapping[str, str],
    report: Callable[[str], None] = lambda _line: None,
) -> FetchResult:
    """Download and verify the bundle in ``store``'s folder into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    # A manifest left by an earlier fetch must not vouch for files this one replaces.
    (dest / bundle.MANIFEST_FILE).unlink(missing_ok=True)
    manifest_bytes = store.read_bytes(bundle.MANIFEST_FILE)
    manifest = bundle.parse_manifest(manifest_bytes)
    digests = expected_files(manifest, pins)
    sizes: dict[str, int] = {}
    for name, digest in digests.items():
        sizes[name] = _download_verified(store, dest, name, digest)
        report(f"{name}: {sizes[name]} bytes, sha256 {digest[:12]}... verified")
    partial_manifest = dest / (bundle.MANIFEST_FILE + _PARTIAL_SUFFIX)
    partial_manifest.write_bytes(manifest_bytes)
    os.replace(partial_manifest, dest / bundle.MANIFEST_FILE)
    return FetchResult(name=manifest["name"], version=manifest["version"], files=sizes)
