"""The bundle format: lookups in both styles, digests and manifest checks."""

import json

import pytest

from batcomputer_bundle import bundle
from batcomputer_bundle.bundle import BundleError, CategoricalFeature, NumericFeature

FULL_LOOKUP = {
    "sex": {"female": 0, "male": 1},
    "age": {"type": "number", "minimum": 0.42, "maximum": 80.0},
    "pclass": {"1st": 0, "2nd": 1, "3rd": 2},
}


def test_full_lookup_keeps_model_order_and_marks_numbers():
    features = bundle.features_from_lookup(FULL_LOOKUP)
    assert [f.name for f in features] == ["sex", "age", "pclass"]
    assert features[1] == NumericFeature("age", "number", 0.42, 80.0)
    assert features[2].values == ["1st", "2nd", "3rd"]


def test_seed_style_lookup_takes_numeric_features_from_the_model_order():
    seed = {"sex": {"female": 0, "male": 1}}
    features = bundle.features_from_lookup(seed, feature_order=["age", "sex", "fare"])
    assert [(f.name, f.type) for f in features] == [
        ("age", "number"),
        ("sex", "categorical"),
        ("fare", "number"),
    ]


def test_seed_style_lookup_naming_an_unknown_feature_is_refused():
    with pytest.raises(BundleError, match="does not have"):
        bundle.features_from_lookup({"colour": {"red": 0}}, feature_order=["age"])


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"a": "x"}, "integer codes"),
        ({"a": 0, "b": 0}, "same code"),
        ({}, "no labels"),
        ({"type": "complex"}, "'number' or 'integer'"),
        ({"type": "number", "minimum": 5, "maximum": 1}, "exceeds"),
    ],
)
def test_malformed_lookup_entries_are_named(entry, message):
    with pytest.raises(BundleError, match=message):
        bundle.features_from_lookup({"feature": entry})


def test_lookup_round_trips_through_features():
    features = bundle.features_from_lookup(FULL_LOOKUP)
    assert bundle.lookup_from_features(features) == FULL_LOOKUP


def test_schema_digest_changes_with_the_api_only():
    features = bundle.features_from_lookup(FULL_LOOKUP)
    digest = bundle.schema_digest(features, ["died", "survived"])
    assert digest == bundle.schema_digest(list(features), ("died", "survived"))
    assert digest != bundle.schema_digest(features, ["died", "lived"])
    wider = (*features[:2], CategoricalFeature("pclass", {"1st": 0, "2nd": 1, "3rd": 2, "4th": 3}))
    assert digest != bundle.schema_digest(wider, ["died", "survived"])


def _write_bundle(folder):
    for name in bundle.PICKLE_FILES:
        (folder / name).write_bytes(name.encode())
    features = bundle.features_from_lookup(FULL_LOOKUP)
    bundle.write_manifest(
        folder,
        {
            "name": "titanic",
            "version": "1.0.0",
            "created_at": "2026-11-22T00:00:00Z",
            "features": [bundle.feature_to_json(f) for f in features],
            "flags": ["died", "survived"],
            "files": bundle.describe_files(folder, bundle.PICKLE_FILES),
            "schema_digest": bundle.schema_digest(features, ["died", "survived"]),
        },
    )


def test_verified_folder_returns_its_manifest(tmp_path):
    _write_bundle(tmp_path)
    manifest = bundle.verify_folder(tmp_path)
    assert manifest["format"] == bundle.FORMAT
    assert not list(tmp_path.glob("*.partial"))


def test_tampered_file_is_reported_by_name(tmp_path):
    _write_bundle(tmp_path)
    (tmp_path / "lookup.pkl").write_bytes(b"evil")
    with pytest.raises(BundleError, match=r"sha256 mismatch for lookup\.pkl"):
        bundle.verify_folder(tmp_path)


def test_pin_disagreeing_with_manifest_fails_closed(tmp_path):
    _write_bundle(tmp_path)
    with pytest.raises(BundleError, match=r"sha256 mismatch for model\.pkl"):
        bundle.verify_folder(tmp_path, pinned={"model.pkl": "0" * 64})
    with pytest.raises(BundleError, match="not part of the bundle"):
        bundle.verify_folder(tmp_path, pinned={"model.onnx": "0" * 64})


@pytest.mark.parametrize(
    "name", ["../etc/passwd", "/etc/passwd", "", "model.pkl\x00", ".", "..", "a\\b", "bundle.json"]
)
def test_manifest_listing_anything_but_a_bundle_file_is_refused(tmp_path, name):
    _write_bundle(tmp_path)
    manifest = json.loads((tmp_path / "bundle.json").read_text())
    manifest["files"][name] = {"sha256": "0" * 64}
    with pytest.raises(BundleError, match=r"not a bundle file; allowed: model\.pkl") as caught:
        bundle.parse_manifest(json.dumps(manifest))
    assert "\n" not in str(caught.value) and "\x00" not in str(caught.value)


def _manifest_with(tmp_path, **changes) -> str:
    _write_bundle(tmp_path)
    manifest = json.loads((tmp_path / "bundle.json").read_text())
    return json.dumps({**manifest, **changes})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"files": []}, "files must be an object"),
        ({"files": "model.pkl"}, "files must be an object"),
        ({"name": 7}, "name must be a string"),
        ({"version": ["1.0.0"]}, "version must be a string"),
        ({"name": ""}, "must not be empty"),
        ({"flags": {"died": 0}}, "flags must be a list"),
        ({"features": None}, "features must be a list"),
        ({"schema_digest": True}, "schema_digest must be a string"),
        ({"format": {"deep": [1]}}, "has format dict"),
        ({"files": {"model.pkl": "0" * 64}}, "no valid sha256 for model.pkl"),
        ({"files": {"model.pkl": {"sha256": 5}}}, "no valid sha256 for model.pkl"),
        ({"files": {"model.pkl": {"sha256": "0" * 64, "bytes": -1}}}, "non-negative"),
        ({"files": {"model.pkl": {"sha256": "0" * 64, "bytes": "9"}}}, "non-negative"),
        ({"files": {"model.pkl": {"sha256": "0" * 64}}}, "does not list lookup.pkl, flags.pkl"),
    ],
)
def test_manifests_of_the_wrong_shape_are_explained(tmp_path, changes, message):
    with pytest.raises(BundleError, match=message):
        bundle.parse_manifest(_manifest_with(tmp_path, **changes))


def test_deeply_nested_and_oversized_manifests_are_refused_not_crashed():
    with pytest.raises(BundleError, match="nested too deeply"):
        bundle.parse_manifest("[" * 100_000 + "]" * 100_000)
    with pytest.raises(BundleError, match="exceeds"):
        bundle.parse_manifest(b" " * (bundle.MAX_MANIFEST_BYTES + 1))
    with pytest.raises(BundleError, match="not valid JSON"):
        bundle.parse_manifest(b"\xff\xfe{")


def test_the_bundle_digest_pins_bundle_json_and_through_it_every_file(tmp_path):
    _write_bundle(tmp_path)
    content = (tmp_path / "bundle.json").read_bytes()
    digest = bundle.bundle_digest(content)
    assert bundle.is_bundle_digest(digest) and digest.startswith("sha256:")
    assert bundle.verify_folder(tmp_path, digest=digest)["name"] == "titanic"
    (tmp_path / "bundle.json").write_bytes(content + b"\n")
    with pytest.raises(bundle.BundleDigestError, match=r"sha256 mismatch for bundle\.json"):
        bundle.verify_folder(tmp_path, digest=digest)


@pytest.mark.parametrize("value", ["sha256:" + "A" * 64, "0" * 64, "sha256:" + "0" * 63, None, 5])
def test_only_sha256_colon_64_lower_hex_is_a_bundle_digest(value):
    assert not bundle.is_bundle_digest(value)


@pytest.mark.parametrize(
    ("text", "message"),
    [("[1]", "JSON object"), ("{", "not valid JSON"), ('{"format": "other"}', "format")],
)
def test_unreadable_manifests_are_explained(text, message):
    with pytest.raises(BundleError, match=message):
        bundle.parse_manifest(text)
