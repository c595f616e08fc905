"""``batcomputer-models list URI``: the models and versions published in a blob container."""

from __future__ import annotations

import argparse
import os
import sys

from batcomputer_bundle.blob_uri import BlobUriError, mask_secrets, parse_folder_uri
from batcomputer_bundle.blobstore import BlobNotFoundError, BlobStore, BlobStoreError
from batcomputer_bundle.names import MANIFEST_FILE
from batcomputer_training import listing

EXIT_FAILED = 1
EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batcomputer-models",
        description="What is published in a blob container. Credentials: "
        "AZURE_STORAGE_CONNECTION_STRING, else AZURE_STORAGE_SAS_TOKEN, else a SAS in the URI.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    list_command = commands.add_parser(
        "list",
        help="models, versions, bundle and schema digests, held-out metrics, publish time",
        description="Reads only the bundle.json of each <URI>/<model>/<version>/.",
    )
    list_command.add_argument("uri", help="blob folder URI batcomputer-publish --to wrote to")
    list_command.add_argument("--model", help="only this model's versions")
    list_command.add_argument("--json", action="store_true", help="a JSON array, not a table")
    return parser


def published_versions(store: BlobStore, model: str | None = None) -> list[listing.ListedVersion]:
    """Every ``<model>/<version>/bundle.json`` under the store's folder, described."""
    blobs = listing.manifest_blobs(
        (blob.name, blob.size, blob.last_modified) for blob in store.files()
    )
    entries = []
    for blob in blobs:
        if model is not None and blob.model != model:
            continue
        if blob.size > listing.MAX_MANIFEST_BYTES:
            entries.append(listing.too_large(blob))
            continue
        try:
            content = store.child(blob.model, blob.version).read_bytes(MANIFEST_FILE)
        except BlobNotFoundError:
            continue  # deleted since it was listed: a republish in progress
        entries.append(listing.describe(blob, content))
    return listing.ordered(entries)


def main(argv: list[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    try:
        store = BlobStore(parse_folder_uri(arguments.uri), os.environ)
    except BlobUriError as error:
        print(f"batcomputer-models: {mask_secrets(str(error))}", file=sys.stderr)
        return EXIT_USAGE
    try:
        entries = published_versions(store, arguments.model)
    except BlobStoreError as error:
        print(f"batcomputer-models: {mask_secrets(str(error))}", file=sys.stderr)
        return EXIT_FAILED
    if arguments.json:
        print(listing.render_json(entries), end="")
    elif entries:
        print(listing.render_table(entries), end="")
    else:
        where = store.folder.display()
        narrowed = f" for model {arguments.model!r}" if arguments.model else ""
        print(f"no published versions{narrowed} under {where}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
