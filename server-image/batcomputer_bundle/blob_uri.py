"""Blob folder URIs, credentials from the environment and the retry schedule: no SDK, no I/O.

A *blob folder URI* names a container and a prefix, in the Azure form
``https://<account>.blob.core.windows.net/<container>/<prefix>`` or the path-style
emulator form ``http(s)://<host>[:port]/<account>/<container>/<prefix>``; a SAS may ride
in the query string. Credentials come from the environment.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote, urlsplit

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
