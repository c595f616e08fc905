"""Children names and label values stay valid and distinct for every SemVer version."""

import re

import pytest

from batcomputer_operator.naming import (
    child_labels,
    deployment_name,
    selector_labels,
    version_label,
)

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")

ODD_VERSIONS = [
    "1.0.0-rc.1",
    "1.0.0-rc-1",
    "1.0.0-RC.1",
    "1.0.0+build.5",
    "1.0.0-alpha-",
    "1.0.0-" + "x" * 120,
    "1.0.0-" + "x" * 119 + "y",
    "999999999.999999999.999999999-pre.release.with.many.parts+and.build.metadata.too",
]


def test_plain_version_reads_naturally():
    assert deployment_name("crime", "1.4.2") == "crime-v1-4-2"
    assert version_label("1.4.2") == "1.4.2"


@pytest.mark.parametrize("version", ["1.4.2", *ODD_VERSIONS])
@pytest.mark.parametrize("model", ["crime", "m" * 63])
def test_names_are_dns_labels_and_label_values(model, version):
    name = deployment_name(model, version)
    assert len(name) <= 63
    assert DNS_LABEL.match(name), name
    assert len(version_label(version)) <= 63
    assert LABEL_VALUE.match(version_label(version)), version_label(version)


def test_distinct_versions_never_share_a_name_or_label():
    versions = ["1.4.2", "1.4.20", "1.42.0", *ODD_VERSIONS]
    for model in ("crime", "m" * 63):
        names = {deployment_name(model, v) for v in versions}
        assert len(names) == len(versions)
    assert len({version_label(v) for v in versions}) == len(versions)


def test_build_metadata_keeps_its_meaning_in_the_label():
    assert version_label("1.0.0+build.5") == "1.0.0_build.5"


def test_children_carry_the_recommended_labels():
    labels = child_labels("crime", "1.0.0-rc.1")
    assert labels == {
        "app.kubernetes.io/name": "batcomputer-model",
        "app.kubernetes.io/instance": "crime",
        "app.kubernetes.io/component": "model-server",
        "app.kubernetes.io/part-of": "batcomputer",
        "app.kubernetes.io/managed-by": "batcomputer-operator",
        "app.kubernetes.io/version": "1.0.0-rc.1",
        "batcomputer.io/model": "crime",
        "batcomputer.io/version": "1.0.0-rc.1",
    }
    assert selector_labels("crime", "1.0.0-rc.1").items() <= labels.items()
