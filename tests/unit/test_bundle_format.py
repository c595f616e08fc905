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
    assert [bundle.feature_from_json(bundle.feature_to_json(f)) for f in features] == list(features)


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


def test_manifest_listing_a_path_outside_the_folder_is_refused(tmp_path):
    _write_bundle(tmp_path)
    manifest = json.loads((tmp_path / "bundle.json").read_text())
    manifest["files"]["../etc/passwd"] = {"sha256": "0" * 64}
    with pytest.raises(BundleError, match="outside the bundle"):
        bundle.parse_manifest(json.dumps(manifest))


@pytest.mark.parametrize(
    ("text", "message"),
    [("[1]", "JSON object"), ("{", "not valid JSON"), ('{"format": "other"}', "format")],
)
def test_unreadable_manifests_are_explained(text, message):
    with pytest.raises(BundleError, match=message):
        bundle.parse_manifest(text)
