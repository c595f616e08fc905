"""The real API server rejects bad BatModels at admission, naming the field, and accepts good ones.

`kubectl apply --dry-run=server --validate=false` sends each manifest through the
API server's full admission path (schema, defaults, pruning) without storing it,
and without kubectl's own client-side checks getting in first.
"""

from __future__ import annotations

import copy
import json
import secrets
import subprocess

import pytest
from _operator_support import install_crd

HEX = "0123456789abcdef" * 4
GOOD = {
    "apiVersion": "batcomputer.io/v1alpha1",
    "kind": "BatModel",
    "metadata": {"name": "crime"},
    "spec": {
        "version": "1.4.2",
        "source": {"uri": "https://acct.blob.core.windows.net/models/crime/1.4.2"},
    },
}


def _with(path: str, value):
    """GOOD with the dotted `path` set to `value` (or removed, for `...`)."""
    manifest = copy.deepcopy(GOOD)
    *parents, leaf = path.split(".")
    node = manifest
    for key in parents:
        node = node.setdefault(key, {})
    if value is ...:
        del node[leaf]
    else:
        node[leaf] = value
    return manifest


def _sha(value):
    return _with("spec.source.sha256", value)


# (why it is bad, manifest, a fragment the API server's message must contain)
BAD = [
    ("version not MAJOR.MINOR.PATCH", _with("spec.version", "1.4"), "spec.version"),
    ("version with a v prefix", _with("spec.version", "v1.4.2"), "spec.version"),
    ("version with a leading zero", _with("spec.version", "01.4.2"), "spec.version"),
    ("pre-release with a leading zero", _with("spec.version", "1.0.0-01"), "spec.version"),
    ("empty build metadata", _with("spec.version", "1.0.0+"), "spec.version"),
    ("version as a number", _with("spec.version", 1.4), "spec.version"),
    ("version missing", _with("spec.version", ...), "spec.version"),
    ("spec missing", _with("spec", ...), "spec"),
    ("source missing", _with("spec.source", ...), "spec.source"),
    ("source.uri missing", _with("spec.source.uri", ...), "spec.source.uri"),
    ("ftp source", _with("spec.source.uri", "ftp://host/models/crime"), "spec.source.uri"),
    ("relative source", _with("spec.source.uri", "models/crime/1.4.2"), "spec.source.uri"),
    ("source without host", _with("spec.source.uri", "https:///models"), "spec.source.uri"),
    ("source with a space", _with("spec.source.uri", "https://h/a b"), "spec.source.uri"),
    ("bundle digest without sha256:", _with("spec.source.digest", HEX), "spec.source.digest"),
    (
        "bundle digest in upper case",
        _with("spec.source.digest", "sha256:" + HEX.upper()),
        "spec.source.digest",
    ),
    ("bundle digest as a map", _with("spec.source.digest", {"sha256": HEX}), "spec.source.digest"),
    ("digest in upper case", _sha({"model.pkl": HEX.upper()}), "spec.source.sha256.model.pkl"),
    ("digest too short", _sha({"lookup.pkl": HEX[:63]}), "spec.source.sha256.lookup.pkl"),
    ("digest not hex", _sha({"flags.pkl": "z" * 64}), "spec.source.sha256.flags.pkl"),
    ("digests as a string", _sha(HEX), "spec.source.sha256"),
    (
        "a fourth digest key",
        _sha({"model.pkl": HEX, "lookup.pkl": HEX, "flags.pkl": HEX, "modle.pkl": HEX}),
        "spec.source.sha256",
    ),
    ("secret name with capitals", _with("spec.source.credentialsSecret", "Blob"), "spec.source"),
    ("negative replicas", _with("spec.replicas", -1), "spec.replicas"),
    ("too many replicas", _with("spec.replicas", 101), "spec.replicas"),
    ("replicas as a word", _with("spec.replicas", "two"), "spec.replicas"),
    ("ingress path without slash", _with("spec.ingress", {"path": "models"}), "spec.ingress.path"),
    ("ingress without path", _with("spec.ingress", {"host": "a.example"}), "spec.ingress.path"),
    ("ingress host with _", _with("spec.ingress", {"path": "/m", "host": "a_b"}), "spec.ingress"),
    ("cpu limit not a quantity", _with("spec.resources", {"limits": {"cpu": "lots"}}), "cpu"),
    (
        "fetch memory not a quantity",
        _with("spec.fetch", {"resources": {"limits": {"memory": "1 GB"}}}),
        "memory",
    ),
    ("fetch resources as a list", _with("spec.fetch", {"resources": [1]}), "spec.fetch.resources"),
    ("empty server image", _with("spec.serverImage", ""), "spec.serverImage"),
    ("server image with a space", _with("spec.serverImage", "a b:1"), "spec.serverImage"),
    ("server image in capitals", _with("spec.serverImage", "Reg/Server:1"), "spec.serverImage"),
    ("short image digest", _with("spec.serverImage", "r/s@sha256:abc"), "spec.serverImage"),
    ("name not a DNS label", _with("metadata.name", "crime.v2"), "metadata.name"),
    ("name starting with a digit", _with("metadata.name", "1crime"), "metadata.name"),
]

GOOD_ONES = [
    ("minimal", GOOD),
    (
        "everything",
        _with(
            "spec",
            {
                "version": "2.0.0-rc.1+build.5",
                "source": {
                    "uri": "http://10.244.0.1:10000/devstoreaccount1/models/crime/2.0.0-rc.1",
                    "credentialsSecret": "blob-reader",
                    "digest": "sha256:" + HEX,
                    "sha256": {"model.pkl": HEX, "lookup.pkl": HEX, "flags.pkl": HEX},
                },
                "replicas": 0,
                "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": 1}},
                "fetch": {"resources": {"requests": {"cpu": "50m"}, "limits": {"memory": "1Gi"}}},
                "ingress": {"path": "/models/crime", "host": "models.local", "className": "nginx"},
                "serverImage": "registry.local:5000/batcomputer-server@sha256:" + HEX,
            },
        ),
    ),
    ("SAS in the URI", _with("spec.source.uri", "https://a.blob.core.windows.net/m/c?sv=1&sig=x")),
]


@pytest.fixture(scope="module")
def namespace(kube_cluster):
    install_crd(kube_cluster)
    name = f"bc-admission-{secrets.token_hex(3)}"
    kube_cluster.kubectl("create", "namespace", name)
    yield name
    kube_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def _dry_run(cluster, namespace: str, manifest: dict) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            cluster.kubectl_binary,
            f"--kubeconfig={cluster.kubeconfig}",
            *("apply", "--dry-run=server", "--validate=false", "-n", namespace),
            *("-o", "json", "-f", "-"),
        ],
        input=json.dumps(manifest),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_table_is_big_enough():
    assert len(BAD) >= 20


@pytest.mark.parametrize(("why", "manifest", "field"), BAD, ids=[case[0] for case in BAD])
def test_bad_manifest_is_rejected_naming_the_field(kube_cluster, namespace, why, manifest, field):
    result = _dry_run(kube_cluster, namespace, manifest)
    assert result.returncode != 0, f"accepted although {why}: {result.stdout}"
    assert "is invalid" in result.stderr or "Invalid value" in result.stderr, result.stderr
    assert field in result.stderr, result.stderr


@pytest.mark.parametrize(("why", "manifest"), GOOD_ONES, ids=[case[0] for case in GOOD_ONES])
def test_good_manifest_is_accepted(kube_cluster, namespace, why, manifest):
    result = _dry_run(kube_cluster, namespace, manifest)
    assert result.returncode == 0, f"{why}: {result.stderr}"
    stored = json.loads(result.stdout)
    assert stored["spec"]["version"] == manifest["spec"]["version"]
    assert stored["spec"]["source"] == manifest["spec"]["source"]  # the digest is not pruned


def test_replicas_default_to_one(kube_cluster, namespace):
    stored = json.loads(_dry_run(kube_cluster, namespace, GOOD).stdout)
    assert stored["spec"]["replicas"] == 1


def test_unknown_fields_are_pruned(kube_cluster, namespace):
    manifest = _with("spec.colour", "blue")
    manifest["status"] = {"servingVersion": "9.9.9"}
    result = _dry_run(kube_cluster, namespace, manifest)
    assert result.returncode == 0, result.stderr
    stored = json.loads(result.stdout)
    assert "colour" not in stored["spec"]
    assert "status" not in stored  # status belongs to the operator (status subresource)


def test_a_mistyped_digest_key_is_kept_for_the_operator_to_refuse(kube_cluster, namespace):
    # 1.20 cannot reject a map key at admission; pruning it would silently unpin model.pkl.
    pins = {"modle.pkl": HEX, "lookup.pkl": HEX}
    result = _dry_run(kube_cluster, namespace, _sha(pins))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["spec"]["source"]["sha256"] == pins


def test_kubectl_explain_documents_the_rules(kube_cluster, namespace):
    explained = kube_cluster.kubectl("explain", "batmodel.spec.version")
    assert "SemVer 2.0.0" in explained
