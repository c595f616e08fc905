"""Publishing rules that need no storage: release names, the SemVer schema rule, the BatModel."""

import pytest
import semver
import yaml

from batcomputer_training.publish import (
    PublishError,
    batmodel_manifest,
    check_schema_rule,
    release_of,
    render_yaml,
)

OLD_API, NEW_API = "sha256:" + "a" * 64, "sha256:" + "b" * 64


def test_release_is_the_bundle_name_and_parsed_version():
    assert release_of({"name": "crime", "version": "1.4.2-rc.1"}) == (
        "crime",
        semver.Version.parse("1.4.2-rc.1"),
    )


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ({"name": "Crime_Model", "version": "1.0.0"}, "lowercase letters, digits and '-'"),
        ({"name": "crime", "version": "1.0"}, "not a SemVer 2.0.0 version"),
        ({"name": "crime", "version": "v1.0.0"}, "not a SemVer 2.0.0 version"),
    ],
)
def test_unfit_names_and_versions_are_refused(manifest, message):
    with pytest.raises(PublishError, match=message):
        release_of(manifest)


@pytest.mark.parametrize("version", ["1.0.1", "1.1.0", "1.3.0"])
def test_minor_or_patch_bump_keeping_the_api_is_allowed(version):
    published = {"1.0.0": OLD_API, "1.2.0": OLD_API, "2.0.0": NEW_API}
    check_schema_rule("titanic", semver.Version.parse(version), OLD_API, published)


def test_minor_bump_changing_the_api_is_refused_with_the_major_to_use():
    published = {"1.0.0": OLD_API, "1.2.0": OLD_API}
    with pytest.raises(PublishError, match=r"needs a MAJOR bump: publish it as 2\.0\.0"):
        check_schema_rule("titanic", semver.Version.parse("1.3.0"), NEW_API, published)


def test_the_nearest_lower_version_is_the_reference_not_the_newest():
    # 1.0.1 follows 1.0.0 (old API) even though 2.0.0 already has the new one.
    published = {"1.0.0": OLD_API, "2.0.0": NEW_API}
    with pytest.raises(PublishError, match=r"published 1\.0\.0"):
        check_schema_rule("titanic", semver.Version.parse("1.0.1"), NEW_API, published)


def test_major_bump_and_first_release_may_change_anything():
    check_schema_rule("titanic", semver.Version.parse("2.0.0"), NEW_API, {"1.9.9": OLD_API})
    check_schema_rule("titanic", semver.Version.parse("0.1.0"), NEW_API, {"1.0.0": OLD_API})
    check_schema_rule("titanic", semver.Version.parse("1.0.0"), NEW_API, {})


DIGEST = "sha256:" + "d" * 64


def test_batmodel_manifest_pins_the_whole_bundle_by_its_digest():
    files = {name: {"sha256": name[0] * 64} for name in ("model.pkl", "lookup.pkl", "flags.pkl")}
    files["model.onnx"] = {"sha256": "o" * 64}
    manifest = {"name": "titanic", "version": "1.0.0", "files": files}
    uri = "http://h:1/acct/models/titanic/1.0.0"
    document = yaml.safe_load(render_yaml(batmodel_manifest(manifest, uri, DIGEST, "ml")))
    assert document == {
        "apiVersion": "batcomputer.io/v1alpha1",
        "kind": "BatModel",
        "metadata": {"name": "titanic", "namespace": "ml"},
        "spec": {
            "version": "1.0.0",
            "source": {
                "uri": "http://h:1/acct/models/titanic/1.0.0",
                "digest": DIGEST,
            },
        },
    }


def test_batmodel_manifest_names_the_credentials_secret_when_given():
    files = {name: {"sha256": name[0] * 64} for name in ("model.pkl", "lookup.pkl", "flags.pkl")}
    manifest = {"name": "crime", "version": "2.0.0", "files": files}
    document = yaml.safe_load(
        render_yaml(
            batmodel_manifest(manifest, "http://h:1/acct/m/crime/2.0.0", DIGEST, None, "reader")
        )
    )
    assert document["metadata"] == {"name": "crime"}
    assert document["spec"]["source"]["credentialsSecret"] == "reader"
