"""One image reference rule, tagged or pinned by digest, wherever a server image enters:
the operator's flag and environment, the chart's values and the BatModel's spec."""

import json
import re
from pathlib import Path

import pytest
import yaml

from batcomputer_operator.config import IMAGE_REFERENCE_PATTERN, load_config

REPO = Path(__file__).resolve().parents[2]
DIGEST = "sha256:" + "0123456789abcdef" * 4
GOOD = [
    "ghcr.io/batcomputer/batcomputer-server:0.1.0",
    f"ghcr.io/batcomputer/batcomputer-server@{DIGEST}",
    f"registry.local:5000/team/batcomputer-server:1.2.3@{DIGEST}",
    "10.244.0.1:5000/server",
    "batcomputer-server",
]
BAD = [
    "",
    "server:1 --privileged",
    "Registry.example/Server:1",
    "server@sha256:abc",
    f"server@{DIGEST.upper()}",
    "server@md5:" + "0" * 64,
    "server:-tag",
    "a:b:c",
    "server;rm -rf /",
]


@pytest.mark.parametrize("reference", GOOD)
def test_tags_and_digests_are_accepted_from_flag_and_environment(reference):
    assert load_config(["--server-image", reference], {}).server_image == reference
    assert load_config([], {"BATCOMPUTER_SERVER_IMAGE": reference}).server_image == reference


@pytest.mark.parametrize("reference", BAD)
def test_a_malformed_reference_stops_the_operator_naming_it(reference, capsys):
    with pytest.raises(SystemExit) as stopped:
        load_config([], {"BATCOMPUTER_SERVER_IMAGE": reference})
    assert stopped.value.code == 2
    assert "--server-image" in capsys.readouterr().err


def test_the_chart_and_the_crd_hold_the_same_rule():
    schema = json.loads((REPO / "helm/batcomputer-operator/values.schema.json").read_text())
    crd = yaml.safe_load((REPO / "crds/batmodels.batcomputer.io.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert schema["definitions"]["pinnableImageReference"]["pattern"] == IMAGE_REFERENCE_PATTERN
    assert spec["properties"]["serverImage"]["pattern"] == IMAGE_REFERENCE_PATTERN
    rule = re.compile(IMAGE_REFERENCE_PATTERN)
    assert all(rule.match(reference) for reference in GOOD)
    assert not any(rule.match(reference) for reference in BAD)
