"""Azure Blob Storage access for the fetcher and the publisher: the SDK adapter.

Where the blobs are and which credential to use come from ``blob_uri``; this module builds
the SDK client with bounded retries and turns every SDK failure into one of three kinds a
user can act on: not found, authentication failed, unreachable.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import BlobPrefix, ContainerClient, ContentSettings, ExponentialRetry

from batcomputer_bundle.blob_uri import (
    CONNECTION_STRING_ENV,
    SAS_TOKEN_ENV,
    BlobFolder,
    RetryPolicySettings,
    credential_for,
    mask_secrets,
)


class BlobStoreError(Exception):
    """Storage refused or failed a request; the message is safe to show (no secrets)."""


class BlobNotFoundError(BlobStoreError):
    pass


class StorageAuthError(BlobStoreError):
    pass


class StorageUnreachableError(BlobStoreError):
    pass


@dataclass(frozen=True)
class BlobFile:
    """A blob below a folder: its name relative to the folder, size and last write."""

    name: str
    size: int
    last_modified: datetime


class _DeadlineRetry(ExponentialRetry):
    """The storage SDK's retry policy with a capped back-off and a per-request time window."""

    def __init__(self, settings: RetryPolicySettings) -> None:
        retries = settings.retry_total()
        super().__init__(
            retry_total=retries,
            retry_connect=retries,
            retry_read=retries,
            retry_status=retries,
            random_jitter_range=0,
        )
        self._settings = settings

    def configure_retries(self, request: Any) -> dict[str, Any]:
        settings = super().configure_retries(request)
        settings["give_up_at"] = time.monotonic() + self._settings.retry_window_seconds
        return settings

    def get_backoff_time(self, settings: dict[str, Any]) -> float:
        return self._settings.backoff(settings["count"])

    def increment(self, settings: dict[str, Any], request: Any, **kwargs: Any) -> bool:
        retrying = super().increment(settings, request, **kwargs)
        wake_up = time.monotonic() + self.get_backoff_time(settings)
        return retrying and wake_up <= settings["give_up_at"]


class _AttemptCounter:
    """Passed to the SDK as ``retry_hook``: counts attempts for the 'unreachable' message."""

    def __init__(self) -> None:
        self.retries = 0

    def __call__(self, **_: Any) -> None:
        self.retries += 1

    @property
    def attempts(self) -> int:
        return self.retries + 1


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return mask_secrets(text.splitlines()[0] if text else type(error).__name__)


def _translate(error: AzureError, what: str, attempts: int, anonymous: bool) -> BlobStoreError:
    if isinstance(error, ResourceNotFoundError):
        if anonymous:
            # Azure answers 404, not 403, to anonymous reads of a private container.
            return BlobNotFoundError(
                f"blob not found: {what} (no credentials given: if the container is private, "
                f"set {CONNECTION_STRING_ENV} or {SAS_TOKEN_ENV})"
            )
        if getattr(error, "error_code", None) == "ContainerNotFound":
            return BlobNotFoundError(f"blob not found: {what} (the container does not exist)")
        return BlobNotFoundError(f"blob not found: {what}")
    if isinstance(error, HttpResponseError) and error.status_code in (401, 403):
        code = getattr(error, "error_code", None)
        code = str(getattr(code, "value", code) or "")
        hint = "no credentials given" if anonymous else code or f"HTTP {error.status_code}"
        return StorageAuthError(f"authentication failed: {hint} for {what}")
    if isinstance(error, ServiceRequestError | ServiceResponseError):
        return StorageUnreachableError(
            f"storage unreachable after {attempts} attempts: {_first_line(error)}"
        )
    if isinstance(error, HttpResponseError) and (error.status_code or 0) >= 500:
        return StorageUnreachableError(
            f"storage unreachable after {attempts} attempts: HTTP {error.status_code} for {what}"
        )
    status = getattr(error, "status_code", None)
    return BlobStoreError(
        f"storage refused the request for {what}: HTTP {status} {_first_line(error)}"
    )


class BlobStore:
    """One container's blobs under a folder, with bounded SDK retries and clear errors."""

    def __init__(
        self,
        folder: BlobFolder,
        environ: Mapping[str, str],
        retry: RetryPolicySettings | None = None,
    ) -> None:
        retry = retry or RetryPolicySettings()
        self.folder = folder
        self._credential = credential_for(folder, environ)
        self._client = ContainerClient(
            account_url=folder.account_url,
            container_name=folder.container,
            credential=self._credential,
            retry_policy=_DeadlineRetry(retry),
            connection_timeout=retry.connection_timeout,
            read_timeout=retry.read_timeout,
        )

    def child(self, *segments: str) -> BlobStore:
        """The same container, client and credentials, for a folder below this one."""
        below = copy.copy(self)
        below.folder = self.folder.child(*segments)
        return below

    @contextlib.contextmanager
    def _storage_errors(self, what: str) -> Iterator[_AttemptCounter]:
        """Turn SDK errors inside the block into ours; the counter is the SDK's retry_hook."""
        counter = _AttemptCounter()
        try:
            yield counter
        except ResourceExistsError:
            raise
        except AzureError as error:
            raise _translate(
                error, what, counter.attempts, anonymous=self._credential is None
            ) from None

    def _blob(self, file_name: str) -> Any:
        return self._client.get_blob_client(self.folder.blob_name(file_name))

    def read_bytes(self, file_name: str) -> bytes:
        with self._storage_errors(self.folder.display(file_name)) as counter:
            return self._blob(file_name).download_blob(retry_hook=counter).readall()

    def download_to(self, file_name: str, stream: IO[bytes]) -> int:
        """Stream a blob into ``stream``; returns the number of bytes written."""
        with self._storage_errors(self.folder.display(file_name)) as counter:
            return self._blob(file_name).download_blob(retry_hook=counter).readinto(stream)

    def exists(self, file_name: str) -> bool:
        with self._storage_errors(self.folder.display(file_name)) as counter:
            return bool(self._blob(file_name).exists(retry_hook=counter))

    def upload_file(self, path: Path, file_name: str, progress: Any = None) -> None:
        """Upload (overwriting); ``progress(sent_bytes, total_bytes)`` is called as it goes."""
        content_type = "application/json" if path.suffix == ".json" else "application/octet-stream"
        with (
            self._storage_errors(self.folder.display(file_name)) as counter,
            path.open("rb") as stream,
        ):
            self._blob(file_name).upload_blob(
                stream,
                length=path.stat().st_size,
                overwrite=True,
                content_settings=ContentSettings(content_type=content_type),
                progress_hook=progress,
                retry_hook=counter,
            )

    def delete(self, file_name: str) -> None:
        with (
            contextlib.suppress(BlobNotFoundError),
            self._storage_errors(self.folder.display(file_name)) as counter,
        ):
            self._blob(file_name).delete_blob(retry_hook=counter)

    def ensure_container(self) -> bool:
        """Create the container unless it exists; True when it was created.

        Credentials scoped to one container (a container SAS) may neither create nor inspect
        it; then it is assumed to exist, and a missing one shows up as 'blob not found'.
        """
        try:
            with self._storage_errors(self.folder.display()) as counter:
                self._client.create_container(retry_hook=counter)
        except (ResourceExistsError, StorageAuthError):
            return False
        return True

    def subfolders(self) -> list[str]:
        """Names of the immediate 'subfolders' under the folder prefix."""
        start = f"{self.folder.prefix}/" if self.folder.prefix else ""
        with self._storage_errors(self.folder.display()) as counter:
            listing = self._client.walk_blobs(
                name_starts_with=start, delimiter="/", retry_hook=counter
            )
            return [
                item.name[len(start) :].rstrip("/")
                for item in listing
                if isinstance(item, BlobPrefix)
            ]

    def files(self) -> list[BlobFile]:
        """Every blob below the folder prefix (at any depth), from the listing alone."""
        start = f"{self.folder.prefix}/" if self.folder.prefix else ""
        with self._storage_errors(self.folder.display()) as counter:
            return [
                BlobFile(blob.name[len(start) :], int(blob.size or 0), blob.last_modified)
                for blob in self._client.list_blobs(name_starts_with=start, retry_hook=counter)
            ]
