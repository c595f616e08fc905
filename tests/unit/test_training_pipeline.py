"""The pipeline's steps on small, hand-checkable data: derived columns, flag grouping,
feature encoding, schema, estimator choice, and a whole bundle from a local CSV."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from batcomputer_bundle import bundle, onnx_convert, safe_pickle
from batcomputer_bundle.bundle import CategoricalFeature, NumericFeature
from batcomputer_training import config, datasets, pipeline
from batcomputer_training.pipeline import TrainingError

TOY = """
name = "toy"
[data]
description = "generated rows"
license = "CC0"
files = ["toy.csv"]
[derived.area]
from = "place"
regex = '^(.+) [0-9]{3}[A-Z]$'
[derived.size_label]
from = "size"
map = { "1" = "small", "2" = "large" }
[[features]]
name = "area"
type = "categorical"
min_count = 3
[[features]]
name = "size_label"
type = "categorical"
values = ["small", "large"]
[[features]]
name = "weight"
type = "number"
[[features]]
name = "year"
type = "integer"
[target]
column = "outcome"
[target.flags]
"bad" = ["lost", "stolen"]
"good" = ["found"]
[estimator]
default = "RandomForestClassifier"
[estimator.params.RandomForestClassifier]
n_estimators = 10
max_depth = 4
[split]
test_size = 0.25
seed = 1
"""


def toy_rows(n: int = 200) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    places = rng.choice(["Leeds 001A", "Bradford 123B", "Wakefield 999Z"], size=n)
    places[0] = "Nowhere 555X"  # a rare area: dropped by min_count
    weight = rng.uniform(1, 10, size=n).round(2).astype(str)
    weight[1:6] = ""  # missing numbers: imputed
    outcome = np.where(rng.uniform(size=n) > 0.5, "found", rng.choice(["lost", "stolen"], n))
    outcome[7] = ""  # no outcome: dropped
    return pd.DataFrame(
        {
            "place": places,
            "size": rng.choice(["1", "2"], size=n),
            "weight": weight,
            "year": rng.choice(["2016", "2017"], size=n),
            "outcome": outcome,
        }
    )


@pytest.fixture
def toy_config(tmp_path: Path) -> config.Config:
    toy_rows().to_csv(tmp_path / "toy.csv", index=False)
    (tmp_path / "toy.toml").write_text(TOY)
    return config.load(tmp_path / "toy.toml")


def test_flags_group_raw_values_in_flag_order(toy_config):
    codes, present = pipeline.group_flags(
        toy_config.target, pd.Series(["stolen", "found", None, " lost ", ""])
    )
    assert present.tolist() == [True, True, False, True, False]
    assert codes[present].tolist() == [0, 1, 0]


def test_a_value_in_no_flag_is_an_error_naming_it(toy_config):
    with pytest.raises(TrainingError, match=r"'returned' \(2 rows\).*\[target.flags\]"):
        pipeline.group_flags(toy_config.target, pd.Series(["returned", "found", "returned"]))


def test_prepare_derives_drops_and_counts(toy_config):
    raw = toy_rows()
    prepared = pipeline.prepare(toy_config, raw)
    assert prepared.rows_read == 200
    assert prepared.dropped == {"no outcome": 1, "area seen < 3 times": 1}
    assert len(prepared.table) == 198 == len(prepared.y)
    assert set(prepared.table["area"]) == {"Leeds", "Bradford", "Wakefield"}
    assert set(prepared.table["size_label"]) == {"small", "large"}
    assert prepared.table["weight"].isna().sum() == 5


def test_missing_column_is_named(toy_config):
    with pytest.raises(TrainingError, match=r"lacks column\(s\) 'year' \(feature 'year'\)"):
        pipeline.prepare(toy_config, toy_rows().drop(columns=["year"]))


def test_non_numbers_in_a_numeric_column_are_an_error(toy_config):
    raw = toy_rows()
    raw.loc[10, "weight"] = "heavy"
    with pytest.raises(TrainingError, match=r"'weight' .*not numbers, e\.g\. 'heavy'"):
        pipeline.prepare(toy_config, raw)


def test_fractions_in_an_integer_column_are_an_error(toy_config):
    raw = toy_rows()
    raw.loc[10, "year"] = "2016.5"
    with pytest.raises(TrainingError, match="declared integer"):
        pipeline.prepare(toy_config, raw)


def test_schema_codes_labels_in_order_and_imputes_with_the_training_median(toy_config):
    prepared = pipeline.prepare(toy_config, toy_rows())
    train_rows = np.arange(100)
    schema = pipeline.build_schema(toy_config, prepared.table, train_rows)
    area, size, weight, year = schema.features
    assert area == CategoricalFeature("area", {"Bradford": 0, "Leeds": 1, "Wakefield": 2})
    assert size.codes == {"small": 0, "large": 1}  # configured order, not alphabetical
    observed = prepared.table["weight"].dropna()
    assert weight == NumericFeature("weight", "number", observed.min(), observed.max())
    assert year == NumericFeature("year", "integer", 2016.0, 2017.0)
    median = prepared.table["weight"].iloc[train_rows].median()
    assert schema.imputed == {"weight": {"median": median, "rows": 5}}


def test_encoding_is_one_float64_column_per_feature():
    features = (
        CategoricalFeature("sex", {"female": 0, "male": 1}),
        NumericFeature("age", "number", 0.0, 80.0),
        CategoricalFeature("pclass", {"1st": 0, "2nd": 1, "3rd": 2}),
    )
    table = pd.DataFrame(
        {"sex": ["male", "female"], "age": [np.nan, 30.5], "pclass": ["3rd", "1st"]}
    )
    matrix = pipeline.encode(features, table, {"age": 28.0})
    assert matrix.dtype == np.float64
    assert matrix.tolist() == [[1.0, 28.0, 2.0], [0.0, 30.5, 0.0]]


def test_encoding_refuses_unknown_labels():
    features = (CategoricalFeature("sex", {"female": 0, "male": 1}),)
    with pytest.raises(TrainingError, match=r"\['other'\] are not among \['female', 'male'\]"):
        pipeline.encode(features, pd.DataFrame({"sex": ["other"]}))


def test_estimators_by_name_with_presets_seed_and_overrides(toy_config):
    forest = pipeline.make_estimator(toy_config)
    assert type(forest).__name__ == "RandomForestClassifier"
    assert (forest.n_estimators, forest.max_depth, forest.random_state) == (10, 4, 1)
    logistic = pipeline.make_estimator(toy_config, "LogisticRegression", {"C": 0.5})
    assert (type(logistic).__name__, logistic.C, logistic.random_state) == (
        "LogisticRegression", 0.5, 1,
    )  # fmt: skip
    dotted = pipeline.make_estimator(toy_config, "sklearn.tree.DecisionTreeClassifier")
    assert type(dotted).__name__ == "DecisionTreeClassifier"


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("Forest", {}, "unknown estimator 'Forest'"),
        ("LinearRegression", {}, "not a classifier"),
        ("os.system", {}, "only scikit-learn"),
        ("RandomForestClassifier", {"depth": 3}, r"has no parameter\(s\) \['depth'\]"),
    ],
)
def test_bad_estimators_and_params_are_refused(toy_config, name, params, message):
    with pytest.raises(TrainingError, match=message):
        pipeline.make_estimator(toy_config, name, params)


def test_rows_split_reproducibly_into_a_stratified_held_out_share(toy_config):
    prepared = pipeline.prepare(toy_config, toy_rows())
    train_rows, test_rows = pipeline.split_rows(toy_config, prepared)
    assert sorted([*train_rows, *test_rows]) == list(range(len(prepared.table)))
    assert len(test_rows) == round(len(prepared.table) * toy_config.test_size)
    again = pipeline.split_rows(toy_config, prepared)
    assert again[1].tolist() == test_rows.tolist()
    share = prepared.y.mean()
    assert abs(prepared.y[test_rows].mean() - share) < 0.05


def test_too_few_rows_of_a_flag_to_split_is_an_error(toy_config):
    prepared = pipeline.prepare(toy_config, toy_rows())
    prepared.y[:] = 0
    prepared.y[0] = 1  # one row of a flag cannot be stratified
    with pytest.raises(TrainingError, match="cannot split the data into train and test rows"):
        pipeline.split_rows(toy_config, prepared)


def test_fit_times_the_fit_and_wants_one_class_per_flag(toy_config):
    x, y = np.arange(20.0).reshape(10, 2), np.array([0, 1] * 5)
    model = pipeline.make_estimator(toy_config, "GaussianNB", None)
    assert pipeline.fit(model, x, y, n_flags=2) >= 0
    with pytest.raises(TrainingError, match=r"learnt classes .*, not 0\.\.2"):
        pipeline.fit(model, x, y, n_flags=3)
    with pytest.raises(TrainingError, match="GaussianNB could not be fitted"):
        pipeline.fit(model, [*x[:, :1].tolist(), ["x"]], [*y, 0], n_flags=2)


def test_the_data_source_record_says_where_rows_came_from_and_how_many_were_used(toy_config):
    raw = datasets.read_source(toy_config.data)
    prepared = pipeline.prepare(toy_config, raw.frame)
    record = pipeline.data_source_record(toy_config, raw, prepared)
    assert record["files"] == list(raw.files)
    assert (record["rows_read"], record["rows"]) == (200, 198)
    assert record["rows_dropped"] == {"no outcome": 1, "area seen < 3 times": 1}
    assert record["license"] == toy_config.data.license


def test_held_out_metrics_for_two_and_more_classes():
    two = pipeline.held_out_metrics(
        np.array([0, 1, 1, 0]), np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]]), 12
    )
    assert two["accuracy"] == 0.75 and two["roc_auc"] == 1.0
    assert (two["n_train"], two["n_test"]) == (12, 4)
    three = pipeline.held_out_metrics(np.array([0, 1, 2]), np.eye(3) * 0.8 + 0.2 / 3, 5)
    assert "roc_auc" not in three
    assert set(three) == {
        "accuracy", "balanced_accuracy", "log_loss", "macro_f1", "n_train", "n_test",
    }  # fmt: skip


def test_a_new_model_from_local_files_needs_no_code(toy_config, tmp_path):
    trained = pipeline.train(toy_config, datasets.read_source(toy_config.data))
    folder = pipeline.write_bundle(trained, "0.1.0", tmp_path / "out")
    assert folder == tmp_path / "out" / "toy" / "0.1.0"
    manifest = bundle.verify_folder(folder)
    assert manifest["flags"] == ["bad", "good"]
    assert manifest["data_source"]["rows"] == 198
    assert manifest["preprocessing"]["imputed"]["weight"]["rows"] == 5
    assert manifest["onnx"]["max_abs_diff"] <= 1e-5
    assert sorted(p.name for p in folder.iterdir()) == [
        "bundle.json", "flags.pkl", "lookup.pkl", "model.onnx", "model.pkl",
    ]  # fmt: skip
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no staging left
    with pytest.raises(pipeline.BundleExistsError, match="immutable"):
        pipeline.write_bundle(trained, "0.1.0", tmp_path / "out")
    before = json.loads((folder / "bundle.json").read_text())["created_at"]
    assert pipeline.write_bundle(trained, "0.1.0", tmp_path / "out", force=True) == folder
    assert json.loads((folder / "bundle.json").read_text())["created_at"] >= before


@pytest.mark.parametrize(
    "estimator",
    ["RandomForestClassifier", "LogisticRegression", "GradientBoostingClassifier", "GaussianNB"],
)
def test_each_preset_estimator_records_the_types_the_server_needs(toy_config, tmp_path, estimator):
    trained = pipeline.train(toy_config, datasets.read_source(toy_config.data), estimator=estimator)
    folder = pipeline.write_bundle(trained, "0.1.0", tmp_path)
    manifest = bundle.verify_folder(folder)
    data = (folder / bundle.MODEL_FILE).read_bytes()
    assert manifest["model_types"] == safe_pickle.global_names(data)
    loaded = safe_pickle.load_model(data, manifest["model_types"])
    assert type(loaded).__name__ == estimator
    lookup = safe_pickle.load_data((folder / bundle.LOOKUP_FILE).read_bytes())
    assert bundle.features_from_lookup(lookup) == trained.schema.features


def test_an_estimator_the_server_would_not_unpickle_serves_only_through_onnx(
    toy_config, tmp_path, monkeypatch
):
    raw = datasets.read_source(toy_config.data)
    notes: list[str] = []
    trained = pipeline.train(toy_config, raw, estimator="KNeighborsClassifier", log=notes.append)
    assert trained.onnx_bytes is not None
    assert any("serves only through model.onnx" in note for note in notes)
    assert "sklearn.neighbors._classification.KNeighborsClassifier" in " ".join(notes)

    def refuse(model, n_features):
        raise onnx_convert.OnnxConversionError(f"skl2onnx cannot convert {type(model).__name__}")

    monkeypatch.setattr(onnx_convert, "to_onnx", refuse)
    with pytest.raises(TrainingError, match=r"has no model\.onnx .* never unpickles"):
        pipeline.train(toy_config, raw, estimator="KNeighborsClassifier")


def test_an_unconvertible_estimator_gives_a_bundle_without_onnx(toy_config, tmp_path, monkeypatch):
    def refuse(model, n_features):
        raise onnx_convert.OnnxConversionError(f"skl2onnx cannot convert {type(model).__name__}")

    monkeypatch.setattr(onnx_convert, "to_onnx", refuse)
    trained = pipeline.train(
        toy_config, datasets.read_source(toy_config.data), estimator="GaussianNB"
    )
    folder = pipeline.write_bundle(trained, "0.2.0", tmp_path)
    manifest = bundle.verify_folder(folder)
    assert manifest["onnx"] is None
    assert "model.onnx" not in manifest["files"]
    assert not (folder / "model.onnx").exists()
    assert trained.onnx_note == "no model.onnx: skl2onnx cannot convert GaussianNB"
