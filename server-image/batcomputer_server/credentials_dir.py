"""Blob credentials read from files: a Secret mounted read-only into the fetch container.

Files keep the credentials out of the pod's environment (which ``kubectl describe``, crash
dumps and every child process see). The files are returned under the environment names
``blob_uri.credential_for`` reads, so both ways reach the same credential rules.
"""

from __future__ import annotations

from pathlib import Path

from batcomputer_bundle.blob_uri import CONNECTION_STRING_ENV, SAS_TOKEN_ENV, BlobUriError
from batcomputer_bundle.names import CONNECTION_STRING_FILE, SAS_TOKEN_FILE

# A connection string or SAS token is well under 4 KiB; anything far larger is not one.
MAX_CREDENTIAL_BYTES = 64 * 1024
_FILES = ((CONNECTION_STRING_FILE, CONNECTION_STRING_ENV), (SAS_TOKEN_FILE, SAS_TOKEN_ENV))


def read_credentials(directory: Path) -> dict[str, str]:
    """``{env name: value}`` for each credential file present in ``directory``.

    Errors name the file and what is wrong with it, never its content.
    """
    if not directory.is_dir():
        raise BlobUriError(f"--credentials-dir {directory} is not a folder")
    credentials: dict[str, str] = {}
    for file_name, env_name in _FILES:
        path = directory / file_name
        if not path.exists():
            continue
        if not path.is_file():
            raise BlobUriError(f"credentials file {path} is not a regular file")
        with path.open("rb") as stream:
            content = stream.read(MAX_CREDENTIAL_BYTES + 1)
        if len(content) > MAX_CREDENTIAL_BYTES:
            raise BlobUriError(f"credentials file {path} exceeds {MAX_CREDENTIAL_BYTES} bytes")
        try:
            value = content.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise BlobUriError(f"credentials file {path} is not UTF-8 text") from None
        if value:
            credentials[env_name] = value
    return credentials
