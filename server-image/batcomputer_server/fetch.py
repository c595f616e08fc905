"""The fetcher: copy a bundle from blob storage into a folder, verified, file by file.

``bundle.json`` is read first and, when a bundle digest is given, checked against it
before anything in it is believed; every file it lists is then checked against it (and
against any per-file pin). Under a size limit, a bundle is refused before any download
when the sizes ``bundle.json`` lists exceed it, and cut off the moment what arrives
passes it, so not even an unpinned bundle can fill the disk it lands on. Blobs in the
folder that ``bundle.json`` does not list are never read. Everything is written into a
fresh folder next to the destination (files created exclusively, never through a
symlink) and renamed into place once complete, so the destination holds a complete,
verified bundle or nothing new at all.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from batcomputer_bundle import bundle
from batcomputer_bundle.blob_uri import BlobUriError
from batcomputer_bundle.blobstore import (
    BlobNotFoundError,
    BlobStore,
    BlobStoreError,
    StorageAuthError,
)
from batcomputer_bundle.names import (
    BUNDLE_FILES,
    EXIT_AUTH,
    EXIT_DIGEST,
    EXIT_INVALID_BUNDLE,
    EXIT_NOT_FOUND,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    MANIFEST_FILE,
)

_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# What a destination may hold for the fetcher to replace it: an earlier fetch's bundle.
_REPLACEABLE = frozenset({*BUNDLE_FILES, MANIFEST_FILE})


class DigestMismatchError(Exception):
    """A file's content (or the manifest) disagrees with the digest it must have."""


class PinError(ValueError):
    """A ``--sha256 FILE=HEX`` or ``--digest`` argument is malformed."""


class DestinationError(ValueError):
    """``--dest`` cannot take the bundle (a file, a symlink, a folder of other files)."""


class SizeLimitError(ValueError):
    """A ``--max-bytes`` argument is not a positive whole number of bytes."""


class BundleTooLargeError(bundle.BundleError):
    """The bundle (every file plus ``bundle.json``) is larger than the size limit."""

    def __init__(self, name: str, limit: int, how: str) -> None:
        super().__init__(f"{name} takes the bundle past its size limit of {limit} bytes ({how})")


@dataclass(frozen=True)
class FetchResult:
    name: str
    version: str
    files: dict[str, int]
    digest: str


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


def parse_digest(argument: str | None) -> str | None:
    """``--digest sha256:<64 hex>``, the bundle digest; None when not given."""
    if argument is None:
        return None
    digest = argument.strip()
    if not bundle.is_bundle_digest(digest):
        raise PinError(f"--digest must be sha256: and 64 lowercase hex digits, got {digest[:80]!r}")
    return digest


def parse_max_bytes(argument: str | None) -> int | None:
    """``--max-bytes N``, the most bytes the whole bundle may hold; None when not given."""
    if argument is None:
        return None
    text = argument.strip()
    if not text.isdecimal() or not text.isascii() or int(text) <= 0:
        raise SizeLimitError(
            f"--max-bytes must be a positive whole number of bytes, got {text[:40]!r}"
        )
    return int(text)


_EXIT_CODES: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], int], ...] = (
    ((BlobUriError, PinError, DestinationError, SizeLimitError), EXIT_USAGE),
    (BlobNotFoundError, EXIT_NOT_FOUND),
    (StorageAuthError, EXIT_AUTH),
    ((DigestMismatchError, bundle.BundleDigestError), EXIT_DIGEST),
    (BlobStoreError, EXIT_UNREACHABLE),
    (bundle.BundleError, EXIT_INVALID_BUNDLE),
)
FETCH_ERRORS = (
    BlobUriError,
    PinError,
    DestinationError,
    SizeLimitError,
    BlobStoreError,
    DigestMismatchError,
    bundle.BundleError,
)


def exit_code_for(error: Exception) -> int:
    """The documented exit code (docs/contract.md, "The fetcher") for one of ``FETCH_ERRORS``."""
    return next(code for kinds, code in _EXIT_CODES if isinstance(error, kinds))


def expected_files(manifest: Mapping[str, Any], pins: Mapping[str, str]) -> dict[str, str]:
    """File → sha256 it must have; a pin that disagrees with the manifest fails closed."""
    try:
        return bundle.expected_digests(manifest, pins)
    except bundle.BundleError as error:
        # Only the pins can disagree here: parse_manifest has vetted the manifest itself.
        raise DigestMismatchError(str(error)) from None


class CheckedSink:
    """Where a download goes: sized and hashed on the way, refused beyond ``limit`` bytes.

    A blob larger than ``bundle.json`` says is cut off at once instead of filling the disk;
    ``too_large`` is what is raised then (by default, a disagreement with bundle.json).
    """

    def __init__(
        self,
        name: str,
        limit: int | None,
        write: Callable[[bytes], Any],
        too_large: Callable[[], Exception] | None = None,
    ) -> None:
        self.name, self.limit, self._write = name, limit, write
        self._too_large = too_large or (
            lambda: DigestMismatchError(f"{name} is larger than the {limit} bytes expected")
        )
        self.size = 0
        self.sha256 = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.size += len(data)
        if self.limit is not None and self.size > self.limit:
            raise self._too_large()
        self.sha256.update(data)
        self._write(data)
        return len(data)

    def writable(self) -> bool:
        return True


def read_manifest(
    store: BlobStore, digest: str | None, max_bytes: int | None = None
) -> tuple[bytes, dict[str, Any]]:
    """``bundle.json``'s bytes and content, checked against the bundle digest first."""
    chunks: list[bytes] = []
    if max_bytes is not None and max_bytes < bundle.MAX_MANIFEST_BYTES:
        sink = CheckedSink(
            MANIFEST_FILE,
            max_bytes,
            chunks.append,
            lambda: BundleTooLargeError(MANIFEST_FILE, max_bytes, "cut off mid-download"),
        )
    else:
        sink = CheckedSink(MANIFEST_FILE, bundle.MAX_MANIFEST_BYTES, chunks.append)
    try:
        store.download_to(MANIFEST_FILE, sink)
    except DigestMismatchError:
        raise bundle.BundleError(
            f"{MANIFEST_FILE} exceeds {bundle.MAX_MANIFEST_BYTES} bytes"
        ) from None
    content = b"".join(chunks)
    if digest is not None:
        bundle.check_bundle_digest(content, digest)
    return content, bundle.parse_manifest(content)


def unlisted_budget(
    manifest: Mapping[str, Any], names: Iterable[str], manifest_size: int, max_bytes: int | None
) -> int | None:
    """What ``max_bytes`` leaves for the files ``bundle.json`` gives no size for, once it and
    every listed size are counted (None: no limit). Raises BundleTooLargeError, before any
    download, when the listed sizes alone take the bundle past ``max_bytes``."""
    if max_bytes is None:
        return None
    total = manifest_size
    for name in names:
        total += manifest["files"][name].get("bytes", 0)
        if total > max_bytes:
            raise BundleTooLargeError(name, max_bytes, f"{total} bytes as bundle.json lists them")
    return max_bytes - total


def check_destination(dest: Path) -> Path:
    """``dest`` made absolute; refused when it is a symlink, not a folder, or the root."""
    dest = Path(os.path.abspath(dest))
    if dest.parent == dest:
        raise DestinationError(f"--dest {dest} has no parent folder to prepare the bundle in")
    try:
        mode = dest.lstat().st_mode
    except FileNotFoundError:
        return dest
    except OSError as error:
        raise DestinationError(f"--dest {dest}: {error.strerror}") from None
    if stat.S_ISLNK(mode):
        raise DestinationError(f"--dest {dest} is a symlink; the fetcher never follows one")
    if not stat.S_ISDIR(mode):
        raise DestinationError(f"--dest {dest} exists and is not a folder")
    return dest


def _staging_prefix(dest: Path) -> str:
    return f".{dest.name}.fetching-"


def _retired_prefix(dest: Path) -> str:
    return f".{dest.name}.replaced-"


def clear_leftovers(dest: Path) -> list[str]:
    """Remove the folders an earlier fetch into ``dest`` left when it was killed mid-way
    (an OOM kill, a node drain), so restarts cannot fill the volume; returns their names.
    Only folders with the fetcher's own prefixes, never through a symlink."""
    prefixes = (_staging_prefix(dest), _retired_prefix(dest))
    removed = []
    with contextlib.suppress(FileNotFoundError), os.scandir(dest.parent) as entries:
        for entry in entries:
            if entry.name.startswith(prefixes) and entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
                removed.append(entry.name)
    return sorted(removed)


def _new_file(folder_fd: int, name: str) -> BinaryIO:
    """A file created in the folder ``folder_fd`` refers to: never existing, never a symlink."""
    return os.fdopen(os.open(name, _NEW_FILE_FLAGS, 0o644, dir_fd=folder_fd), "wb")


def _download_verified(
    store: BlobStore,
    folder_fd: int,
    name: str,
    digest: str,
    *,
    limit: int | None,
    too_large: Callable[[], Exception] | None = None,
) -> int:
    with _new_file(folder_fd, name) as stream:
        sink = CheckedSink(name, limit, stream.write, too_large)
        store.download_to(name, sink)
    if sink.sha256.hexdigest() != digest:
        raise DigestMismatchError(f"sha256 mismatch for {name}")
    return sink.size


def _old_bundle_names(dest: Path) -> list[str] | None:
    """Names in an existing ``dest`` when it holds only an earlier fetch's files, else None."""
    names = []
    with os.scandir(dest) as entries:
        for entry in entries:
            if entry.name not in _REPLACEABLE or not entry.is_file(follow_symlinks=False):
                return None
            names.append(entry.name)
    return names


def _install(staging: Path, dest: Path) -> None:
    """Rename the finished ``staging`` folder to ``dest``, replacing an earlier bundle there."""
    if not dest.exists() and not dest.is_symlink():
        os.rename(staging, dest)
        return
    check_destination(dest)
    old_names = _old_bundle_names(dest)
    if old_names is None:
        raise DestinationError(
            f"--dest {dest} holds files that are not a bundle's; the fetcher replaces only "
            "an empty folder or an earlier bundle"
        )
    if not old_names:
        os.rename(staging, dest)  # onto an empty folder: atomic
        return
    retired = Path(tempfile.mkdtemp(prefix=_retired_prefix(dest), dir=dest.parent))
    os.rename(dest, retired / "bundle")
    os.rename(staging, dest)
    for name in old_names:
        (retired / "bundle" / name).unlink()
    (retired / "bundle").rmdir()
    retired.rmdir()


def fetch_bundle(
    store: BlobStore,
    dest: Path,
    pins: Mapping[str, str],
    digest: str | None = None,
    *,
    report: Callable[[str], None] = lambda _line: None,
    max_bytes: int | None = None,
) -> FetchResult:
    """Download and verify the bundle in ``store``'s folder into ``dest``; with ``max_bytes``,
    a bundle (every file plus ``bundle.json``) larger than that is refused."""
    dest = check_destination(dest)
    manifest_bytes, manifest = read_manifest(store, digest, max_bytes)
    expected = expected_files(manifest, pins)
    budget = unlisted_budget(manifest, expected, len(manifest_bytes), max_bytes)
    report(
        f"{MANIFEST_FILE} matches the bundle digest {digest}"
        if digest
        else f"no --digest given: {MANIFEST_FILE} itself is trusted unverified"
    )
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        for name in clear_leftovers(dest):
            report(f"removed {name}, left by an interrupted fetch")
        staging = Path(tempfile.mkdtemp(prefix=_staging_prefix(dest), dir=dest.parent))
    except OSError as error:
        raise DestinationError(f"cannot prepare --dest {dest}: {error.strerror}") from None
    try:
        sizes = _fill(
            store,
            staging,
            manifest,
            expected,
            manifest_bytes,
            max_bytes=max_bytes,
            budget=budget,
            report=report,
        )
        staging.chmod(0o755)
        _install(staging, dest)
    except OSError as error:
        raise DestinationError(f"cannot write --dest {dest}: {error.strerror}") from None
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return FetchResult(
        name=manifest["name"],
        version=manifest["version"],
        files=sizes,
        digest=bundle.bundle_digest(manifest_bytes),
    )


def _fill(
    store: BlobStore,
    staging: Path,
    manifest: Mapping[str, Any],
    expected: Mapping[str, str],
    manifest_bytes: bytes,
    *,
    max_bytes: int | None,
    budget: int | None,
    report: Callable[[str], None],
) -> dict[str, int]:
    """Every listed file, verified, then ``bundle.json``, into the fresh ``staging`` folder.

    A file is cut off past its listed size; a file listed without one, past what is left of
    ``budget`` (the size limit less bundle.json and every listed size), so the whole
    bundle never holds more than the limit.
    """
    sizes: dict[str, int] = {}
    folder_fd = os.open(staging, _DIRECTORY_FLAGS)
    try:
        for name, file_digest in expected.items():
            listed = manifest["files"][name].get("bytes")
            if listed is not None or budget is None or max_bytes is None:
                sizes[name] = _download_verified(store, folder_fd, name, file_digest, limit=listed)
            else:
                cut_off = functools.partial(
                    BundleTooLargeError,
                    name,
                    max_bytes,
                    "it lists no size for it; cut off mid-download",
                )
                sizes[name] = _download_verified(
                    store, folder_fd, name, file_digest, limit=budget, too_large=cut_off
                )
                budget -= sizes[name]
            report(f"{name}: {sizes[name]} bytes, sha256 {file_digest[:12]}... verified")
        with _new_file(folder_fd, MANIFEST_FILE) as stream:
            stream.write(manifest_bytes)
    finally:
        with contextlib.suppress(OSError):
            os.close(folder_fd)
    return sizes
