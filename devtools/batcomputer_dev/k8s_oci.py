"""Single-layer OCI image archives written directly, without a registry or an image tool.

Used for the sandbox pause image (one static binary) and for the debootstrap
base image (one root filesystem tarball); `ctr images import` and `buildah
pull oci-archive:` both read the result.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Sequence
from pathlib import Path

from batcomputer_bundle.bundle import sha256_file

OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
# A fixed timestamp keeps the archive's digests stable for identical inputs.
EPOCH = "1970-01-01T00:00:00Z"


def image_config(layer_digest: str, entrypoint: Sequence[str], env: Sequence[str]) -> dict:
    return {
        "architecture": "amd64",
        "os": "linux",
        "created": EPOCH,
        "config": {"Entrypoint": list(entrypoint), "Env": list(env)},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created": EPOCH, "created_by": "batcomputer_dev.k8s_oci"}],
    }


def write_single_layer_archive(
    layer_tar: Path,
    image_name: str,
    output: Path,
    *,
    entrypoint: Sequence[str] = (),
    env: Sequence[str] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",),
) -> None:
    """Write an OCI image-layout tarball holding one uncompressed layer."""
    layer_digest = "sha256:" + sha256_file(layer_tar)
    config = _canonical(image_config(layer_digest, entrypoint, env))
    manifest = _canonical(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": _descriptor(OCI_CONFIG, config),
            "layers": [
                {"mediaType": OCI_LAYER, "digest": layer_digest, "size": layer_tar.stat().st_size}
            ],
        }
    )
    index = _canonical(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    **_descriptor(OCI_MANIFEST, manifest),
                    "annotations": {
                        "io.containerd.image.name": image_name,
                        "org.opencontainers.image.ref.name": image_name,
                    },
                }
            ],
        }
    )
    partial = output.with_name(output.name + ".partial")
    with tarfile.open(partial, "w") as archive:
        _add_bytes(archive, "oci-layout", _canonical({"imageLayoutVersion": "1.0.0"}))
        _add_bytes(archive, "index.json", index)
        _add_bytes(archive, _blob_path(config), config)
        _add_bytes(archive, _blob_path(manifest), manifest)
        archive.add(layer_tar, arcname=f"blobs/sha256/{layer_digest.removeprefix('sha256:')}")
    partial.rename(output)


def write_file_layer(files: dict[str, tuple[Path, int]], output: Path) -> None:
    """A layer tarball holding the given host files at the given paths and modes."""
    with tarfile.open(output, "w") as layer:
        for name, (source, mode) in sorted(files.items()):
            info = layer.gettarinfo(source, arcname=name)
            info.mode, info.mtime = mode, 0
            info.uid, info.gid, info.uname, info.gname = 0, 0, "root", "root"
            with source.open("rb") as stream:
                layer.addfile(info, stream)


def _canonical(document: dict) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def _descriptor(media_type: str, blob: bytes) -> dict:
    return {
        "mediaType": media_type,
        "digest": "sha256:" + hashlib.sha256(blob).hexdigest(),
        "size": len(blob),
    }


def _blob_path(blob: bytes) -> str:
    return f"blobs/sha256/{hashlib.sha256(blob).hexdigest()}"


def _add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    archive.addfile(info, io.BytesIO(data))
