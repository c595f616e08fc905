"""Azure Blob Storage access for the fetcher and the publisher.

A *blob folder URI* names a container and a prefix, in the Azure form
``https://<account>.blob.core.windows.net/<container>/<prefix>`` or the path-style
emulator form ``http(s)://<host>[:port]/<account>/<container>/<prefix>``; a SAS may ride
in the query string. Credentials come from the environment. Every SDK failure is turned
into one of three kinds a user can act on: not found, authentication failed, unreachable.
"""

from __future__ import annotations

import contextlib
import copy
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, unquote, urlsplit

from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import BlobPrefix, ContainerClient, ContentSettings, ExponentialRetry

CONNECTION_STRING_ENV = "AZURE_STORAGE_CONNECTION_STRING"
SAS_TOKEN_ENV = "AZURE_STORAGE_SAS_TOKEN"
EMULATOR_ACCOUNT = "devstoreaccount1"
EMULATOR_ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

_ACCOUNT_PATTERN = re.compile(r"^[a-z0-9]{3,24}$")
_CONTAINER_PATTERN = re.compile(r"^(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*$")
# Values that would let a reader of a log line into the storage account.
_SECRET_PATTERN = re.compile(r"(?i)\b(sig|AccountKey|SharedAccessSignature)=[^&;\s'\"]+")


class BlobUriError(ValueError):
    """The blob folder URI or the credentials in the environment cannot be used."""


class BlobStoreError(Exception):
    """Storage refused or failed a request; the message is safe to show (no secrets)."""


class BlobNotFoundError(BlobStoreError):
    pass


class StorageAuthError(BlobStoreError):
    pass


class StorageUnreachableError(BlobStoreError):
    pass


def mask_secrets(text: str) -> str:
    """The text with SAS signatures and account keys replaced by ``***``."""
    return _SECRET_PATTERN.sub(lambda match: f"{match.group(1)}=***", text)


@dataclass(frozen=True)
class BlobFolder:
    """A container and a prefix inside it, plus the SAS that came with the URI (if any)."""

    account_url: str
    account: str
    container: str
    prefix: str
    sas: str | None = field(default=None, repr=False)

    def child(self, *segments: str) -> BlobFolder:
        prefix = "/".join(part.strip("/") for part in (self.prefix, *segments) if part.strip("/"))
        return BlobFolder(self.account_url, self.account, self.container, prefix, self.sas)

    def blob_name(self, file_name: str) -> str:
        return f"{self.prefix}/{file_name}" if self.prefix else file_name

    def display(self, file_name: str | None = None) -> str:
        """The folder (or one file in it) as a URI without its SAS: safe for logs."""
        path = "/".join(p for p in (self.container, self.prefix, file_name) if p)
        return f"{self.account_url}/{quote(path, safe='/')}"


def parse_folder_uri(uri: str) -> BlobFolder:
    """Parse a blob folder URI; the error names the part that is wrong and what is allowed."""
    parts = urlsplit(uri.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BlobUriError(
            f"blob folder URI must start with https:// (or http:// for an emulator), "
            f"got {mask_secrets(uri)!r}"
        )
    if parts.username is not None:
        raise BlobUriError("blob folder URI may not carry user:password@; use a SAS or the env")
    origin = f"{parts.scheme}://{parts.netloc}"
    segments = [unquote(segment) for segment in parts.path.split("/") if segment]
    if ".blob." in parts.hostname:
        account, account_url = parts.hostname.split(".", 1)[0], origin
    elif segments:
        account = segments.pop(0)
        account_url = f"{origin}/{account}"
    else:
        raise BlobUriError(
            "path-style blob folder URI needs /<account>/<container>[/<prefix>] after the host"
        )
    if not _ACCOUNT_PATTERN.match(account):
        raise BlobUriError(
            f"storage account {account!r} in the URI is not valid: "
            "3-24 lowercase letters and digits allowed"
        )
    if not segments:
        raise BlobUriError(f"blob folder URI names no container after {account_url}")
    container = segments[0]
    if not _CONTAINER_PATTERN.match(container):
        raise BlobUriError(
            f"container {container!r} in the URI is not valid: 3-63 lowercase letters, digits "
            "and single hyphens allowed, starting and ending with a letter or digit"
        )
    if any(segment in (".", "..") for segment in segments[1:]):
        raise BlobUriError("blob folder URI prefix may not contain '.' or '..' segments")
    return BlobFolder(
        account_url=account_url,
        account=account,
        container=container,
        prefix="/".join(segments[1:]),
        sas=parts.query or None,
    )


def _parse_connection_string(text: str) -> dict[str, str]:
    settings: dict[str, str] = {}
    for item in text.strip().strip(";").split(";"):
        key, separator, value = item.partition("=")
        if not separator:
            raise BlobUriError(
                f"{CONNECTION_STRING_ENV} must be Key=Value pairs separated by ';' "
                f"(e.g. AccountName=...;AccountKey=...), got an item without '='"
            )
        settings[key.strip().lower()] = value.strip()
    if settings.get("usedevelopmentstorage", "").lower() == "true":
        settings.setdefault("accountname", EMULATOR_ACCOUNT)
        settings.setdefault("accountkey", EMULATOR_ACCOUNT_KEY)
    return settings


def credential_for(folder: BlobFolder, environ: Mapping[str, str]) -> Any:
    """The SDK credential: connection string, else SAS token env, else URI SAS, else none.

    Only the credential is taken from a connection string; the URI says where the blobs are,
    so a pod can use the emulator's well-known connection string against any host.
    """
    connection_string = environ.get(CONNECTION_STRING_ENV, "").strip()
    if connection_string:
        settings = _parse_connection_string(connection_string)
        account = settings.get("accountname")
        if account and account != folder.account:
            raise BlobUriError(
                f"{CONNECTION_STRING_ENV} is for account {account!r} "
                f"but the URI names account {folder.account!r}"
            )
        if settings.get("sharedaccesssignature"):
            return settings["sharedaccesssignature"].lstrip("?")
        if account and settings.get("accountkey"):
            return {"account_name": account, "account_key": settings["accountkey"]}
        raise BlobUriError(
            f"{CONNECTION_STRING_ENV} needs AccountName and AccountKey, or SharedAccessSignature"
        )
    sas_token = environ.get(SAS_TOKEN_ENV, "").strip().lstrip("?")
    if sas_token:
        return sas_token
    return folder.sas


@dataclass(frozen=True)
class RetryPolicySettings:
    """How long the SDK keeps retrying a request before storage counts as unreachable."""

    retry_window_seconds: float = 120.0
    backoff_factor: float = 1.0
    backoff_max: float = 10.0
    connection_timeout: float = 10.0
    read_timeout: float = 60.0

    def backoff(self, retry_number: int) -> float:
        """Wait before retry ``retry_number`` (1-based): factor * 2^(n-1), capped."""
        return min(self.backoff_max, self.backoff_factor * 2 ** (retry_number - 1))

    def retry_total(self) -> int:
        """Retries whose back-offs fit into the retry window (each attempt may add time)."""
        waited, retries = 0.0, 0
        while waited + self.backoff(retries + 1) <= self.retry_window_seconds:
            retries += 1
            waited += self.backoff(retries)
        return retries


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
