"""The real titanic and crime bundles (trained once per session by the fixture)."""

import json
import pickle

import numpy as np
import pytest

from batcomputer_bundle import bundle, onnx_convert, safe_pickle
from batcomputer_dev.pytest_bundles import train_bundle

MANIFEST_KEYS = {
    "format", "name", "version", "created_at", "python_version", "sklearn_version",
    "estimator", "params", "features", "flags", "files", "schema_digest", "metrics",
    "data_source", "self_check", "onnx", "model_types",
}  # fmt: skip
MODELS = ("titanic", "crime")


def load(folder, name):
    with (folder / name).open("rb") as stream:
        return pickle.load(stream)  # our own freshly written bundle


@pytest.mark.parametrize("model", MODELS)
def test_bundle_is_complete_and_its_digests_verify(trained_bundles, model):
    folder = trained_bundles[model]
    assert folder == trained_bundles.root / model / "1.0.0"
    manifest = bundle.verify_folder(folder)
    assert set(manifest) >= MANIFEST_KEYS
    assert (manifest["name"], manifest["version"]) == (model, "1.0.0")
    assert manifest["created_at"].endswith("Z")
    assert set(manifest["files"]) == {"model.pkl", "lookup.pkl", "flags.pkl", "model.onnx"}
    for name, entry in manifest["files"].items():
        assert entry["bytes"] == (folder / name).stat().st_size
    assert manifest["data_source"]["license"]
    assert manifest["data_source"]["rows"] > 0


@pytest.mark.parametrize("model", MODELS)
def test_lookup_flags_and_model_agree(trained_bundles, model):
    folder = trained_bundles[model]
    manifest = bundle.read_manifest(folder)
    estimator, lookup, flags = (load(folder, n) for n in bundle.PICKLE_FILES)
    features = bundle.features_from_lookup(lookup)
    assert len(features) == estimator.n_features_in_
    assert list(estimator.classes_) == list(range(len(flags)))
    assert flags == manifest["flags"]
    assert [bundle.feature_to_json(f) for f in features] == manifest["features"]
    assert bundle.schema_digest(features, flags) == manifest["schema_digest"]


@pytest.mark.parametrize("model", MODELS)
def test_self_check_rows_reproduce_and_onnx_agrees(trained_bundles, model):
    folder = trained_bundles[model]
    manifest = bundle.read_manifest(folder)
    check = manifest["self_check"]
    rows = np.array(check["rows"])
    assert rows.shape == (min(64, manifest["metrics"]["n_test"]), len(manifest["features"]))
    estimator = load(folder, "model.pkl")
    assert np.array_equal(estimator.predict_proba(rows), np.array(check["probabilities"]))
    onnx = manifest["onnx"]
    assert onnx["file"] == "model.onnx" and onnx["tolerance"] == 1e-5
    assert onnx["rows_checked"] == manifest["metrics"]["n_test"]
    assert 0 <= onnx["max_abs_diff"] <= 1e-5
    assert onnx["opset"] >= 9
    onnx_bytes = (folder / "model.onnx").read_bytes()
    assert onnx_convert.max_abs_difference(onnx_bytes, rows, check["probabilities"]) <= 1e-5


@pytest.mark.parametrize("model", MODELS)
def test_the_server_readers_load_the_real_bundle(trained_bundles, model):
    folder = trained_bundles[model]
    manifest = bundle.read_manifest(folder)
    data = (folder / "model.pkl").read_bytes()
    assert manifest["model_types"] == safe_pickle.global_names(data)
    assert "sklearn.ensemble._forest.RandomForestClassifier" in manifest["model_types"]
    assert set(manifest["model_types"]) <= set(safe_pickle.MODEL_ALLOW_LIST)
    estimator = safe_pickle.load_model(data, manifest["model_types"])
    check = manifest["self_check"]
    assert np.array_equal(estimator.predict_proba(np.array(check["rows"])), check["probabilities"])
    for name in ("lookup.pkl", "flags.pkl"):
        # Plain Python values only: the data reader refuses NumPy scalars.
        assert safe_pickle.load_data((folder / name).read_bytes()) == load(folder, name)


def test_titanic_is_the_benchmarked_forest_with_reasonable_metrics(trained_bundles):
    manifest = bundle.read_manifest(trained_bundles.titanic)
    assert manifest["estimator"] == "RandomForestClassifier"
    params = manifest["params"]
    assert (params["n_estimators"], params["max_depth"], params["random_state"]) == (100, 8, 42)
    assert manifest["flags"] == ["died", "survived"]
    by_name = {f["name"]: f for f in manifest["features"]}
    assert by_name["pclass"]["values"] == ["1st", "2nd", "3rd"]
    assert by_name["sex"]["values"] == ["female", "male"]
    assert by_name["age"]["type"] == "number" and by_name["sibsp"]["type"] == "integer"
    metrics = manifest["metrics"]
    assert metrics["accuracy"] > 0.75 and metrics["roc_auc"] > 0.8
    assert metrics["n_train"] + metrics["n_test"] == 889  # two rows lack a port
    assert manifest["preprocessing"]["imputed"]["age"]["rows"] == 177


def test_crime_inputs_and_flags(trained_bundles):
    manifest = bundle.read_manifest(trained_bundles.crime)
    by_name = {f["name"]: f for f in manifest["features"]}
    assert list(by_name) == ["crime", "district", "year"]
    assert by_name["district"]["values"] == [
        "Bradford",
        "Calderdale",
        "Kirklees",
        "Leeds",
        "Wakefield",
    ]
    assert "Burglary" in by_name["crime"]["values"]
    assert "Anti-social behaviour" not in by_name["crime"]["values"]  # it has no outcome
    assert (by_name["year"]["minimum"], by_name["year"]["maximum"]) == (2016, 2018)
    assert len(manifest["flags"]) == 5
    metrics = manifest["metrics"]
    assert "roc_auc" not in metrics
    assert metrics["accuracy"] > 0.55  # the most frequent outcome alone gives 0.41


def test_retraining_the_same_config_keeps_the_schema_digest(trained_bundles, tmp_path):
    original = bundle.read_manifest(trained_bundles.titanic)
    again = bundle.read_manifest(train_bundle("titanic", "1.0.1", tmp_path))
    assert again["schema_digest"] == original["schema_digest"]
    assert again["metrics"] == original["metrics"]  # same seed, same split, same forest
    assert again["self_check"] == original["self_check"]
    # Reproducible: the same configuration and data give byte-identical files.
    assert {n: e["sha256"] for n, e in again["files"].items()} == {
        n: e["sha256"] for n, e in original["files"].items()
    }


def test_another_estimator_is_a_minor_change_with_the_same_schema(trained_bundles, tmp_path):
    original = bundle.read_manifest(trained_bundles.titanic)
    folder = train_bundle("titanic", "1.1.0", tmp_path, "--estimator", "LogisticRegression")
    logistic = bundle.verify_folder(folder)
    assert logistic["estimator"] == "LogisticRegression"
    assert logistic["schema_digest"] == original["schema_digest"]
    assert logistic["onnx"]["input_dtype"] == "float64"
    assert logistic["onnx"]["max_abs_diff"] <= 1e-5
    assert logistic["metrics"]["accuracy"] > 0.75


def test_bundle_json_is_plain_json(trained_bundles):
    text = (trained_bundles.crime / "bundle.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text)["format"] == bundle.FORMAT
