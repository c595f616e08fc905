"""``batcomputer-publish DIR --to URI``: release a bundle and print its BatModel."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tqdm import tqdm

from batcomputer_bundle.blob_uri import BlobUriError, mask_secrets, parse_folder_uri
from batcomputer_bundle.blobstore import BlobStore, BlobStoreError
from batcomputer_bundle.bundle import BundleError
from batcomputer_training.publish import (
    PublishError,
    batmodel_manifest,
    publish,
    render_yaml,
    upload_bytes,
)

EXIT_REFUSED = 1
EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batcomputer-publish",
        description="Upload a bundle folder to <URI>/<model>/<version>/ and print a BatModel "
        "manifest for it. Credentials: AZURE_STORAGE_CONNECTION_STRING, else "
        "AZURE_STORAGE_SAS_TOKEN, else a SAS in the URI.",
    )
    parser.add_argument("bundle", type=Path, help="bundle folder, e.g. out/titanic/1.0.0")
    parser.add_argument("--to", required=True, help="blob folder URI holding the models")
    parser.add_argument("--force", action="store_true", help="replace an already published version")
    parser.add_argument(
        "--manifest-uri",
        help="the same folder as the cluster reaches it (default: --to without its SAS)",
    )
    parser.add_argument("--namespace", help="metadata.namespace of the printed BatModel")
    parser.add_argument(
        "--credentials-secret",
        metavar="NAME",
        help="Secret (keys connectionString or sasToken) the model pods read the blobs with",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    try:
        store = BlobStore(parse_folder_uri(arguments.to), os.environ)
        manifest_base = (
            parse_folder_uri(arguments.manifest_uri) if arguments.manifest_uri else store.folder
        )
    except BlobUriError as error:
        print(f"batcomputer-publish: {mask_secrets(str(error))}", file=sys.stderr)
        return EXIT_USAGE
    try:
        total = upload_bytes(arguments.bundle)
        with tqdm(
            total=total, unit="B", unit_scale=True, desc="publishing", file=sys.stderr
        ) as bar:
            published = publish(arguments.bundle, store, force=arguments.force, on_bytes=bar.update)
    except BundleError as error:
        print(f"batcomputer-publish: invalid bundle folder: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (PublishError, BlobStoreError) as error:
        print(f"batcomputer-publish: {mask_secrets(str(error))}", file=sys.stderr)
        return EXIT_REFUSED
    manifest = published.manifest
    source = manifest_base.child(manifest["name"], str(manifest["version"])).display()
    action = "replaced" if published.replaced else "published"
    print(f"{action} {published.folder.display()}", file=sys.stderr)
    print(f"bundle digest {published.digest}", file=sys.stderr)
    batmodel = batmodel_manifest(
        manifest, source, published.digest, arguments.namespace, arguments.credentials_secret
    )
    print(render_yaml(batmodel), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
