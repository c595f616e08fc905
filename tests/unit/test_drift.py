"""Reference distributions (bundle.json) and the drift monitor's PSI and counts."""

from __future__ import annotations

import numpy as np
import pytest

from batcomputer_bundle import reference
from batcomputer_bundle.bundle import BundleError, CategoricalFeature, NumericFeature
from batcomputer_server.drift import (
    PSI_MODERATE,
    PSI_SIGNIFICANT,
    DriftMonitor,
    assessment,
    population_stability_index,
)
from batcomputer_server.metrics import DriftMetrics, Metrics

FEATURES = (
    CategoricalFeature("pclass", {"1st": 0, "2nd": 1, "3rd": 2}),
    NumericFeature("age", "number", 0.0, 100.0),
    NumericFeature("sibsp", "integer", 0.0, 8.0),
)


def _training_matrix(rows: int = 2000, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.column_stack(
        [
            rng.choice(3, rows, p=[0.2, 0.2, 0.6]),
            rng.uniform(1.0, 70.0, rows),
            rng.choice([0, 1, 2, 3], rows, p=[0.6, 0.25, 0.1, 0.05]),
        ]
    ).astype(np.float64)


@pytest.fixture(scope="module")
def references():
    section = reference.from_training(FEATURES, _training_matrix())
    return reference.parse({reference.MANIFEST_KEY: section}, FEATURES)


def _rows(rng, rows, classes=("1st", "2nd", "3rd"), p=(0.2, 0.2, 0.6), ages=(1.0, 70.0)):
    return [
        {
            "pclass": str(rng.choice(classes, p=p)),
            "age": float(rng.uniform(*ages)),
            "sibsp": int(rng.choice([0, 1, 2, 3], p=[0.6, 0.25, 0.1, 0.05])),
        }
        for _ in range(rows)
    ]


def test_training_records_label_shares_and_decile_bins():
    section = reference.from_training(FEATURES, _training_matrix())
    assert section["rows"] == 2000
    pclass = section["inputs"]["pclass"]
    assert list(pclass["frequencies"]) == ["1st", "2nd", "3rd"]
    assert pclass["frequencies"]["3rd"] == pytest.approx(0.6, abs=0.03)
    age = section["inputs"]["age"]
    assert len(age["edges"]) == 11
    assert age["frequencies"] == pytest.approx([0.1] * 10, abs=0.01)
    # Few distinct values: one edge per value, not deciles collapsing onto each other.
    assert section["inputs"]["sibsp"]["edges"] == [0.0, 1.0, 2.0, 3.0]
    assert sum(section["inputs"]["sibsp"]["frequencies"]) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ([1, 2], "'inputs' object"),
        ({"inputs": []}, "'inputs' object"),
        ({"inputs": {"age": "wide"}}, "must be an object"),
        ({"inputs": {"age": {"edges": [3, 2, 1], "frequencies": [0.5, 0.5]}}}, "ascending"),
        ({"inputs": {"age": {"edges": [0, float("nan")], "frequencies": [1]}}}, "ascending"),
        ({"inputs": {"age": {"edges": [0, 1, 2], "frequencies": [1]}}}, "one frequency per"),
        ({"inputs": {"age": {"edges": [0, 1], "frequencies": [-1]}}}, "numbers >= 0"),
        ({"inputs": {"age": {"edges": [0, 1], "frequencies": ["1"]}}}, "numbers >= 0"),
        ({"inputs": {"pclass": {"frequencies": {"1st": 1}}}}, "each of its labels"),
        ({"inputs": {"pclass": {"frequencies": [1, 0, 0]}}}, "each of its labels"),
    ],
)
def test_a_hostile_reference_section_is_a_bundle_error(section, message):
    with pytest.raises(BundleError, match=message):
        reference.parse({reference.MANIFEST_KEY: section}, FEATURES)


def test_a_bundle_without_references_has_none_and_unknown_inputs_are_ignored():
    assert reference.parse({}, FEATURES) == {}
    section = {"inputs": {"unknown": {"edges": [0, 1], "frequencies": [1]}}}
    assert reference.parse({reference.MANIFEST_KEY: section}, FEATURES) == {}


def test_psi_is_zero_for_the_same_population_and_grows_with_a_shift():
    assert population_stability_index([0.5, 0.5], [50, 50]) == pytest.approx(0.0)
    small = population_stability_index([0.5, 0.5], [55, 45])
    large = population_stability_index([0.5, 0.5], [95, 5])
    assert 0 < small < PSI_MODERATE
    assert large > PSI_SIGNIFICANT
    assert population_stability_index([1.0, 0.0], [0, 10]) > 1  # an empty reference bin
    assert [assessment(v) for v in (None, 0.05, 0.2, 0.3)] == [
        None,
        "stable",
        "moderate",
        "significant",
    ]


def test_the_training_population_is_stable_and_a_shifted_one_is_significant(references):
    rng = np.random.default_rng(7)
    monitor = DriftMonitor(references, window_rows=1000, min_rows=100, rows_per_request=100)
    monitor.observe_rows(_rows(rng, 50))
    assert monitor.report()["inputs"]["age"]["psi"] is None  # too few values yet
    for _ in range(10):
        monitor.observe_rows(_rows(rng, 100))
    stable = monitor.report()["inputs"]
    assert all(stable[name]["psi"] < 0.1 for name in ("pclass", "age", "sibsp"))
    assert stable["age"]["assessment"] == "stable"
    assert stable["age"]["window_values"] == 1000

    for _ in range(10):  # now only first class, and only the old
        monitor.observe_rows(_rows(rng, 100, p=(1.0, 0.0, 0.0), ages=(60.0, 70.0)))
    shifted = monitor.report()["inputs"]
    assert shifted["pclass"]["psi"] > 0.25
    assert shifted["age"]["assessment"] == "significant"
    assert shifted["sibsp"]["psi"] < 0.1  # untouched input stays stable


def test_unseen_labels_and_values_outside_training_are_counted_and_junk_skipped(references):
    metrics = Metrics()
    monitor = DriftMonitor(
        references, DriftMetrics(metrics, ["age", "sibsp"], ["pclass"]), min_rows=1
    )
    monitor.observe_rows(
        [
            {"pclass": "4th", "age": 150.0, "sibsp": 2},
            {"pclass": "1st", "age": -1, "sibsp": 10**400},
            {"pclass": None, "age": "old", "sibsp": True},
            {"pclass": ["1st"], "age": float("nan")},
            "not a row",
            7,
        ]
    )
    monitor.observe_rows({"pclass": "deluxe", "age": 30.0, "sibsp": 0})
    monitor.observe_rows("not rows at all")
    report = monitor.report()["inputs"]
    assert report["pclass"]["unseen_category"] == 2
    assert report["age"]["out_of_range"] == 2
    assert report["sibsp"]["out_of_range"] == 1
    assert report["pclass"]["window_values"] == 1
    text = metrics.exposition().decode()
    assert 'batcomputer_input_unseen_category_total{input="pclass"} 2.0' in text
    assert 'batcomputer_input_out_of_range_total{input="age"} 2.0' in text
    assert 'batcomputer_input_out_of_range_total{input="sibsp"} 1.0' in text
    assert 'batcomputer_input_drift_psi{input="age"}' in text


def test_a_large_batch_contributes_a_bounded_even_sample(references):
    monitor = DriftMonitor(references, rows_per_request=256)
    rows = [{"pclass": "1st", "age": 10.0, "sibsp": 0}] * 2500 + [
        {"pclass": "3rd", "age": 50.0, "sibsp": 1}
    ] * 2500
    monitor.observe_rows(rows)
    report = monitor.report()["inputs"]
    assert report["pclass"]["window_values"] == 256


def test_scores_are_published_when_the_windows_fill_then_per_hundred_rows_or_second(references):
    metrics = Metrics()
    now = [0.0]
    monitor = DriftMonitor(
        references,
        DriftMetrics(metrics, ["age", "sibsp"], ["pclass"]),
        min_rows=10,
        rows_per_request=100,
        clock=lambda: now[0],
    )

    def published_age_psi() -> float | None:
        for line in metrics.exposition().decode().splitlines():
            if line.startswith('batcomputer_input_drift_psi{input="age"}'):
                return float(line.rsplit(" ", 1)[1])
        return None

    old = {"pclass": "1st", "age": 65.0, "sibsp": 0}
    young = {"pclass": "3rd", "age": 5.0, "sibsp": 0}
    monitor.observe_rows([old] * 5)
    assert published_age_psi() is None  # fewer values than min_rows: nothing to say yet
    monitor.observe_rows([old] * 5)
    first = published_age_psi()
    assert first is not None  # published at once when the window filled
    monitor.observe_rows([young] * 50)
    assert published_age_psi() == first  # 50 rows within the same second: not yet
    now[0] = 1.5
    monitor.observe_rows([young])
    second = published_age_psi()
    assert second != first  # a second later
    monitor.observe_rows([old] * 100)
    assert published_age_psi() != second  # a hundred rows later, within the second
