"""``batcomputer-fetch``: the init container that puts a verified bundle into a volume."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from batcomputer_bundle.blob_uri import RetryPolicySettings, mask_secrets, parse_folder_uri
from batcomputer_bundle.blobstore import BlobStore
from batcomputer_bundle.names import EXIT_OK, EXIT_USAGE
from batcomputer_server.credentials_dir import read_credentials
from batcomputer_server.fetch import (
    FETCH_ERRORS,
    exit_code_for,
    fetch_bundle,
    parse_digest,
    parse_max_bytes,
    parse_pins,
)

_KUBERNETES_TERMINATION_LOG = Path("/dev/termination-log")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batcomputer-fetch",
        description="Download a model bundle from Azure Blob Storage and verify every file. "
        "Credentials: the files connectionString, else sasToken in --credentials-dir when given; "
        "else AZURE_STORAGE_CONNECTION_STRING, else AZURE_STORAGE_SAS_TOKEN; else a SAS "
        "in the URI, else anonymous. Exit codes: 0 ok, 2 usage, 3 blob not found, "
        "4 authentication failed, 5 sha256 mismatch (a file, bundle.json or the bundle digest), "
        "6 storage unreachable, 7 invalid bundle (or larger than --max-bytes).",
    )
    parser.add_argument("--source", required=True, help="blob folder URI of the bundle")
    parser.add_argument("--dest", required=True, type=Path, help="folder to write the bundle to")
    parser.add_argument(
        "--digest",
        metavar="sha256:HEX",
        help="the bundle digest (sha256 of bundle.json) the bundle must have; it covers "
        "every file, since bundle.json lists each with its sha256",
    )
    parser.add_argument(
        "--sha256",
        action="append",
        default=[],
        metavar="FILE=HEX",
        help="digest FILE must have (repeatable); a file not in the bundle is an error",
    )
    parser.add_argument(
        "--max-bytes",
        metavar="N",
        help="refuse a bundle larger than N bytes in all (every file plus bundle.json): "
        "before any download when the sizes bundle.json lists exceed N, else the moment "
        "a download passes it (exit 7)",
    )
    parser.add_argument(
        "--credentials-dir",
        type=Path,
        metavar="DIR",
        help="read the storage credential from the file connectionString or sasToken in DIR "
        "(a mounted Secret) instead of the environment",
    )
    parser.add_argument(
        "--termination-log",
        type=Path,
        help="file for the one-line outcome (default /dev/termination-log when writable)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=RetryPolicySettings.retry_window_seconds,
        metavar="SECONDS",
        help="give up on a request when storage stays unreachable this long (default %(default)s)",
    )
    return parser


def _termination_log(explicit: Path | None) -> Path | None:
    if explicit is not None:
        return explicit
    if _KUBERNETES_TERMINATION_LOG.is_file() and os.access(_KUBERNETES_TERMINATION_LOG, os.W_OK):
        return _KUBERNETES_TERMINATION_LOG
    return None


def _finish(message: str, code: int, termination_log: Path | None) -> int:
    # One line whatever a hostile bundle put into the message (names, JSON errors).
    printable = "".join(c if c.isprintable() else " " for c in mask_secrets(message))
    line = " ".join(printable.split()) or "failed"
    print(line if code == EXIT_OK else f"batcomputer-fetch: {line}", file=sys.stderr)
    if termination_log is not None:
        try:
            termination_log.write_text(line + "\n")
        except OSError as error:
            print(f"batcomputer-fetch: cannot write {termination_log}: {error}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    log_path = _termination_log(arguments.termination_log)
    if not arguments.timeout > 0:
        return _finish("--timeout must be a positive number of seconds", EXIT_USAGE, log_path)
    started = time.monotonic()
    try:
        folder = parse_folder_uri(arguments.source)
        pins = parse_pins(arguments.sha256)
        digest = parse_digest(arguments.digest)
        max_bytes = parse_max_bytes(arguments.max_bytes)
        credentials = (
            read_credentials(arguments.credentials_dir)
            if arguments.credentials_dir is not None
            else os.environ
        )
        store = BlobStore(
            folder, credentials, RetryPolicySettings(retry_window_seconds=arguments.timeout)
        )
        print(f"fetching {folder.display()} into {arguments.dest}", file=sys.stderr)
        result = fetch_bundle(
            store,
            arguments.dest,
            pins,
            digest,
            report=lambda line: print(line, file=sys.stderr),
            max_bytes=max_bytes,
        )
    except FETCH_ERRORS as error:
        return _finish(str(error), exit_code_for(error), log_path)
    elapsed = time.monotonic() - started
    return _finish(
        f"fetched {result.name} {result.version} ({result.digest}): "
        f"{len(result.files)} files verified in {elapsed:.2f} s",
        EXIT_OK,
        log_path,
    )


if __name__ == "__main__":
    sys.exit(main())
