"""A BatModel pinned by its bundle digest, on the real cluster: a version whose blobs were
replaced after publishing (bundle.json, model.onnx or a pickle) never starts — Stalled,
reason DigestMismatch — and the version before it keeps serving.

One model serves 1.0.0; each case publishes its own version, replaces one of its blobs
in storage (as an attacker with write access to the container would), then asks the
BatModel for that version, pinned by the digest `batcomputer-publish` printed. The
operator requires pinned bundles, so a BatModel without a digest is refused.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from _operator_support import (
    children,
    condition,
    create_batmodel,
    model_namespace,
    running_operator,
    wait_settled,
)

from batcomputer_bundle import bundle
from batcomputer_dev.kube_testing import call_service, kubectl_json, patch_spec, publish

NAME = "pinned"
SECRET = "blob-reader"
# Each replaced file gets a version of its own, so each case is a fresh fetch.
VERSIONS = {"bundle.json": "1.0.1", "model.onnx": "1.0.2", "lookup.pkl": "1.0.3"}


@dataclass(frozen=True)
class Pinned:
    namespace: str
    container: str
    specs: dict[str, dict]  # version -> BatModel spec as batcomputer-publish printed it


def _as_version(folder: Path, version: str, tmp_path: Path) -> Path:
    """The trained bundle released under another version: a bundle.json, and digest, of its own."""
    copy = tmp_path / version
    shutil.copytree(folder, copy)
    bundle.write_manifest(copy, {**bundle.read_manifest(copy), "version": version})
    return copy


@pytest.fixture(scope="module")
def pinned(
    kube_cluster, server_image, pod_azurite, trained_bundles, tmp_path_factory
) -> Iterator[Pinned]:
    """BatModel `pinned` serving titanic 1.0.0, pinned by its bundle digest."""
    container = pod_azurite.make_container("digest")
    releases = tmp_path_factory.mktemp("releases")
    specs = {}
    for version in ("1.0.0", *VERSIONS.values()):
        folder = _as_version(trained_bundles.titanic, version, releases)
        spec = publish(pod_azurite, container, folder)["spec"]
        assert spec["source"]["digest"] == bundle.bundle_digest(
            (folder / "bundle.json").read_bytes()
        )
        specs[version] = {**spec, "source": {**spec["source"], "credentialsSecret": SECRET}}
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    with (
        model_namespace(kube_cluster, pod_azurite, SECRET) as namespace,
        running_operator(
            kube_cluster, namespace, log, "--server-image", server_image, "--require-pinned-bundles"
        ),
    ):
        create_batmodel(kube_cluster, namespace, NAME, specs["1.0.0"])
        model = wait_settled(kube_cluster, NAME, namespace)
        assert (condition(model, "Pinned")["status"], condition(model, "Pinned")["reason"]) == (
            "True",
            "BundleDigest",
        )
        yield Pinned(namespace, container, specs)


def _replacement(name: str, published: bytes, other_model: Path) -> bytes:
    """What an attacker puts in place of `name`."""
    if name == "bundle.json":
        # Every file still matches the manifest: only the digest can tell.
        manifest = json.loads(published)
        manifest["self_check"]["probabilities"] = [
            list(reversed(row)) for row in manifest["self_check"]["probabilities"]
        ]
        return json.dumps(manifest).encode()
    return (other_model / name).read_bytes()


@pytest.mark.parametrize("replaced", list(VERSIONS))
def test_a_replaced_blob_stalls_the_pinned_version_while_the_previous_one_serves(
    kube_cluster, pod_azurite, trained_bundles, pinned, replaced
):
    version = VERSIONS[replaced]
    blobs = pod_azurite.service_client().get_container_client(pinned.container)
    blob = f"titanic/{version}/{replaced}"
    published = blobs.download_blob(blob).readall()
    blobs.upload_blob(
        blob, _replacement(replaced, published, trained_bundles.crime), overwrite=True
    )

    started = time.monotonic()
    patch_spec(kube_cluster, NAME, pinned.namespace, pinned.specs[version])
    model = wait_settled(
        kube_cluster, NAME, pinned.namespace, "Stalled", "DigestMismatch", timeout=120
    )
    print(f"{replaced} replaced: Stalled/DigestMismatch after {time.monotonic() - started:.1f} s")
    message = condition(model, "Stalled")["message"]
    # Another model's file is refused by its size (cut off) or its sha256, by name.
    assert re.search(rf"exited 5: (sha256 mismatch for {replaced}|{replaced} is larger)", message)
    assert condition(model, "Ready")["status"] == "False"
    assert condition(model, "Pinned")["status"] == "True"
    assert model["status"]["desiredVersion"] == version
    assert model["status"]["servingVersion"] == "1.0.0"
    assert call_service(kube_cluster, NAME, pinned.namespace, "/api/info")["version"] == "1.0.0"


def test_kubectl_wide_shows_whether_a_model_is_pinned(kube_cluster, pinned):
    wide = kubectl_json(kube_cluster, "get", "bm", NAME, "-n", pinned.namespace)
    assert condition(wide, "Pinned")["status"] == "True"
    columns = kube_cluster.kubectl("get", "bm", NAME, "-n", pinned.namespace, "-o", "wide")
    header, row = columns.splitlines()[:2]
    assert header.split()[-2:] == ["PINNED", "AGE"]
    assert row.split()[-2] == "True"


def test_an_unpinned_model_is_refused_where_pins_are_required(kube_cluster, pinned):
    unpinned = {**pinned.specs["1.0.0"]}
    unpinned["source"] = {k: v for k, v in unpinned["source"].items() if k != "digest"}
    create_batmodel(kube_cluster, pinned.namespace, "unpinned", unpinned)
    model = wait_settled(
        kube_cluster, "unpinned", pinned.namespace, "Stalled", "Unpinned", timeout=60
    )
    assert condition(model, "Stalled")["message"].startswith(
        "this operator serves only pinned bundles (requirePinnedBundles): "
        "version 1.0.0 is not pinned"
    )
    assert (condition(model, "Pinned")["status"], condition(model, "Pinned")["reason"]) == (
        "False",
        "Unpinned",
    )
    assert children(kube_cluster, "deployments", "unpinned", pinned.namespace) == []
    events = kubectl_json(
        kube_cluster,
        *("get", "events", "-n", pinned.namespace, "--field-selector"),
        "involvedObject.kind=BatModel,involvedObject.name=unpinned",
    )
    assert [(e["type"], e["reason"]) for e in events["items"]] == [("Warning", "Unpinned")]
