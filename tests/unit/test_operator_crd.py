"""The CRD as users meet it: names, printer columns, and documented validation rules.

Admission itself is tested against a real API server in tests/cluster; here the
rules are checked for being documented and for meaning what their descriptions say.
"""

import re
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft4Validator

from batcomputer_bundle.names import DIGEST_PATTERN
from batcomputer_operator.rollout import (
    Measurement,
    Progress,
    next_action,
    replica_split,
    rollout_status,
)
from batcomputer_operator.rollout_spec import parse_rollout

CRD = yaml.safe_load(
    (Path(__file__).resolve().parents[2] / "crds" / "batmodels.batcomputer.io.yaml").read_text()
)
VERSION = CRD["spec"]["versions"][0]
SPEC = VERSION["schema"]["openAPIV3Schema"]["properties"]["spec"]


def _pattern(*path):
    node = SPEC
    for key in path:
        node = node["properties"][key]
    return re.compile(node["pattern"])


def test_names_and_scope():
    names = CRD["spec"]["names"]
    assert CRD["metadata"]["name"] == "batmodels.batcomputer.io"
    assert (names["kind"], names["plural"], names["shortNames"]) == (
        "BatModel",
        "batmodels",
        ["bm"],
    )
    assert names["categories"] == ["batcomputer"]
    assert CRD["spec"]["scope"] == "Namespaced"
    assert VERSION["name"] == "v1alpha1"
    assert VERSION["subresources"] == {"status": {}}


def test_printer_columns():
    columns = {c["name"]: c["jsonPath"] for c in VERSION["additionalPrinterColumns"]}
    assert columns == {
        "Version": ".spec.version",
        "Serving": ".status.servingVersion",
        "Ready": '.status.conditions[?(@.type=="Ready")].status',
        "URL": ".status.url",
        "Strategy": ".spec.rollout.strategy",
        "Step": ".status.rollout.step",
        "Weight": ".status.rollout.weight",
        "Verdict": ".status.rollout.verdict",
        "Pinned": '.status.conditions[?(@.type=="Pinned")].status',
        "Age": ".metadata.creationTimestamp",
    }
    wide = [c["name"] for c in VERSION["additionalPrinterColumns"] if c.get("priority")]
    assert wide == ["Verdict", "Pinned"]


ROLLOUT_STATUS = VERSION["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"][
    "rollout"
]
_CANARY = parse_rollout(
    {"strategy": "Canary", "steps": [{"weight": 10, "pause": "30s"}, {"weight": 50}]},
    replicas=4,
)
_SHADOW = parse_rollout({"strategy": "Shadow", "mirrorPercent": 50, "duration": "2m"})
_PROGRESS = Progress("2.0.0", 0, "2026-12-02T08:00:00Z")


@pytest.mark.parametrize(
    ("rollout", "measured", "split"),
    [
        (_CANARY, Measurement(), replica_split(10, 4)),
        (_CANARY, Measurement(requests=100, errors=50), None),
        (_SHADOW, Measurement(requests=100, disagreement=0.5), None),
        (_SHADOW, Measurement(requests=100, disagreement=0.0), None),
    ],
)
def test_the_status_rollout_schema_keeps_what_the_operator_writes(rollout, measured, split):
    # A structural schema prunes undeclared status fields: each one written must be declared.
    written = rollout_status(rollout, _PROGRESS, next_action(rollout, 0, 600, measured), split)
    assert set(written) <= set(ROLLOUT_STATUS["properties"])
    Draft4Validator(ROLLOUT_STATUS).validate(written)
    for column in VERSION["additionalPrinterColumns"]:
        if column["jsonPath"].startswith(".status.rollout."):
            assert (
                column["jsonPath"].removeprefix(".status.rollout.") in ROLLOUT_STATUS["properties"]
            )


def _walk(node, path="spec"):
    yield path, node
    for key, child in (node.get("properties") or {}).items():
        yield from _walk(child, f"{path}.{key}")


def test_every_spec_field_is_described():
    # A pattern error quotes the regex; the description is what tells users the rule.
    undocumented = [path for path, node in _walk(SPEC) if not node.get("description")]
    assert undocumented == []


@pytest.mark.parametrize(
    ("version", "valid"),
    [
        ("1.4.2", True),
        ("0.0.0", True),
        ("1.0.0-rc.1", True),
        ("1.0.0-alpha-", True),
        ("1.0.0+build.5", True),
        ("1.0.0-rc.1+build.5", True),
        ("1.4", False),
        ("v1.4.2", False),
        ("01.4.2", False),
        ("1.0.0-01", False),
        ("1.0.0-", False),
        ("1.0.0+", False),
        ("1.0.0 ", False),
    ],
)
def test_version_rule_is_semver(version, valid):
    assert bool(_pattern("version").match(version)) is valid


@pytest.mark.parametrize(
    ("uri", "valid"),
    [
        ("https://acct.blob.core.windows.net/models/crime/1.4.2", True),
        ("http://10.244.0.1:10000/devstoreaccount1/models/crime/1.4.2", True),
        ("https://acct.blob.core.windows.net/models/crime?sv=2024&sig=abc%3D", True),
        ("ftp://host/models", False),
        ("https://", False),
        ("https:///models", False),
        ("https://host/with space", False),
        ("models/crime/1.4.2", False),
    ],
)
def test_uri_rule_is_http_url(uri, valid):
    assert bool(_pattern("source", "uri").match(uri)) is valid


def test_digest_pins_keep_unknown_keys_for_the_operator_to_refuse():
    # Pruning a mistyped key would silently drop the pin; 1.20 cannot reject it at admission.
    sha256 = SPEC["properties"]["source"]["properties"]["sha256"]
    assert set(sha256["properties"]) == {"model.pkl", "lookup.pkl", "flags.pkl"}
    assert sha256["x-kubernetes-preserve-unknown-fields"] is True
    assert sha256["maxProperties"] == 3
    assert "InvalidSpec" in sha256["description"]
    hex_rule = re.compile(sha256["properties"]["model.pkl"]["pattern"])
    assert hex_rule.match("0f" * 32)
    assert not hex_rule.match("0F" * 32)
    assert not hex_rule.match("0f" * 31)


@pytest.mark.parametrize(
    ("digest", "valid"),
    [
        ("sha256:" + "0f" * 32, True),
        ("sha256:" + "0F" * 32, False),
        ("0f" * 32, False),
        ("sha256:" + "0f" * 31, False),
        ("sha512:" + "0f" * 32, False),
        ("sha256:" + "0f" * 32 + "\n", False),
    ],
)
def test_the_bundle_digest_rule_is_the_one_the_operator_and_fetcher_apply(digest, valid):
    assert _pattern("source", "digest").pattern == DIGEST_PATTERN
    assert bool(_pattern("source", "digest").fullmatch(digest)) is valid
    assert "DigestMismatch" in SPEC["properties"]["source"]["properties"]["digest"]["description"]


def test_replicas_and_ingress_rules():
    replicas = SPEC["properties"]["replicas"]
    assert (replicas["minimum"], replicas["maximum"], replicas["default"]) == (0, 100, 1)
    assert _pattern("ingress", "path").match("/models/crime")
    assert not _pattern("ingress", "path").match("models/crime")


@pytest.mark.parametrize(
    ("quantity", "valid"),
    [("100m", True), ("1.5Gi", True), ("2", True), ("1e3", True), ("1 GB", False), ("lots", False)],
)
def test_fetch_resources_take_kubernetes_quantities(quantity, valid):
    resources = SPEC["properties"]["fetch"]["properties"]["resources"]["properties"]
    for section in ("requests", "limits"):
        rule = re.compile(resources[section]["additionalProperties"]["pattern"])
        assert bool(rule.match(quantity)) is valid
