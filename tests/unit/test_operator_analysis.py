"""Rollout analysis from /metrics pages a real server produced (tests/data/rollout-metrics,
captured by tests/integration/test_shadow_traffic.py; see the README there)."""

import math
from pathlib import Path

import pytest

from batcomputer_operator import analysis
from batcomputer_operator.rollout import Action, next_action
from batcomputer_operator.rollout_spec import parse_rollout

PAGES = Path(__file__).resolve().parents[1] / "data" / "rollout-metrics"


def _page(name: str) -> analysis.Scrape:
    return analysis.parse((PAGES / name).read_text())


def test_a_real_page_parses_into_samples():
    after = _page("serving-after.txt")
    assert after.total("batcomputer_shadow_requests_total", outcome="compared") == 21
    assert after.total("batcomputer_http_requests_total", route="/api/predict") == 21
    assert after.select("batcomputer_shadow_probability_delta_count") == {
        frozenset({("flag", "died")}): 23.0,
        frozenset({("flag", "survived")}): 23.0,
    }


def test_growth_between_two_scrapes_of_the_serving_version():
    grown = analysis.growth(_page("serving-before.txt"), _page("serving-after.txt"))
    measured = analysis.shadow_measurement(grown)
    assert (measured.requests, measured.errors) == (21, 0)
    assert measured.disagreement == pytest.approx(3.9129421710968018 / 23)
    found = analysis.disagreement(grown)
    assert found.top_flag_changed == pytest.approx(5 / 23)
    assert 0 < measured.p99_seconds <= 0.1


def test_gauges_are_left_out_of_growth():
    grown = analysis.growth(_page("serving-before.txt"), _page("serving-after.txt"))
    assert grown.select("batcomputer_shadow_probability_delta_max") == {}
    assert grown.select("batcomputer_ready") == {}
    assert grown.select("batcomputer_model_info") == {}


def test_a_restarted_pod_counts_from_zero():
    # Counters went down between the two scrapes: the pod restarted, and all the second
    # scrape counted happened since.
    before, after = _page("serving-after.txt"), _page("serving-before.txt")
    assert analysis.growth(before, after) == analysis.growth(None, after)


def test_the_candidates_own_predictions_for_a_canary():
    grown = analysis.growth(_page("candidate-before.txt"), _page("candidate-after.txt"))
    measured = analysis.canary_measurement(grown)
    assert (measured.requests, measured.errors) == (21, 0)
    assert 0 < measured.p99_seconds <= 0.1
    assert measured.disagreement is None


def test_an_unready_candidates_503s_are_errors():
    measured = analysis.canary_measurement(analysis.growth(None, _page("candidate-unready.txt")))
    assert (measured.requests, measured.errors) == (20, 20)
    decision = next_action(
        parse_rollout({"strategy": "Canary", "steps": [{"weight": 10}]}, replicas=2), 0, 5, measured
    )
    assert (decision.action, decision.failed_threshold) == (Action.ROLL_BACK, "maxErrorRatio")
    assert decision.message == "maxErrorRatio: 20 of 20 requests failed (1.000), above 0.01"


def test_the_stump_disagrees_too_much_for_the_default_threshold():
    grown = analysis.growth(_page("serving-before.txt"), _page("serving-after.txt"))
    decision = next_action(
        parse_rollout({"strategy": "Shadow"}), 0, 10, analysis.shadow_measurement(grown)
    )
    assert (decision.action, decision.failed_threshold) == (Action.ROLL_BACK, "maxDisagreement")
    lenient = parse_rollout({"strategy": "Shadow", "analysis": {"maxDisagreement": 0.5}})
    later = next_action(lenient, 0, 300, analysis.shadow_measurement(grown))
    assert later.action is Action.PROMOTE


def test_pods_are_combined_by_summing():
    one = analysis.growth(None, _page("candidate-after.txt"))
    both = analysis.combined([one, one])
    assert analysis.canary_measurement(both).requests == 42
    assert analysis.combined([]) == analysis.Scrape({})


def test_a_page_without_shadow_metrics_measures_nothing():
    grown = analysis.growth(None, _page("candidate-after.txt"))
    measured = analysis.shadow_measurement(grown)
    assert (measured.requests, measured.errors, measured.disagreement) == (0, 0, None)
    assert measured.p99_seconds is None
    assert analysis.disagreement(grown).top_flag_changed is None


@pytest.mark.parametrize(
    ("buckets", "expected"),
    [
        ({}, None),
        ({0.1: 0, math.inf: 0}, None),
        ({0.1: 100, math.inf: 100}, 0.099),  # 99th of 100 in [0, 0.1]: linear
        ({0.1: 0, 0.2: 100, math.inf: 100}, 0.199),
        ({0.1: 50, 0.2: 100, math.inf: 100}, 0.198),
        ({0.1: 99, 0.2: 100, math.inf: 100}, 0.1),  # exactly at a bucket's upper bound
        ({0.1: 0, 2.5: 0, math.inf: 10}, 2.5),  # beyond the last bound: that bound
        ({0.5: 99, 1.0: 99, 2.0: 100, math.inf: 100}, 0.5),
    ],
)
def test_quantile_as_prometheus_computes_it(buckets, expected):
    found = analysis.quantile(0.99, buckets)
    assert found == (None if expected is None else pytest.approx(expected))


@pytest.mark.parametrize(
    "text",
    [
        'x{a="1"} not-a-number',
        'x{a="1} 1',
        'x{a="1",,} 1',
        'x{a="1"}',
        "x 1e",
        "x 1 notatime",
        "{}",
    ],
)
def test_a_page_that_is_not_prometheus_text_is_a_metrics_error(text):
    with pytest.raises(analysis.MetricsError, match="not Prometheus text"):
        analysis.parse(text)


@pytest.mark.parametrize("value", ["NaN", "+Inf", "-1"])
def test_a_count_that_is_not_one_is_a_metrics_error(value):
    # A NaN error count would pass every threshold.
    page = analysis.parse(f'batcomputer_http_requests_total{{route="/api/predict"}} {value}')
    with pytest.raises(analysis.MetricsError, match="not a count"):
        analysis.growth(None, page)


def test_an_empty_page_is_an_empty_scrape():
    assert analysis.parse("") == analysis.Scrape({})


def test_baselines_measure_each_step_from_its_first_scrape():
    before, after = _page("candidate-before.txt"), _page("candidate-after.txt")
    baselines = analysis.Baselines()
    # The first scrape of a step is its baseline: nothing measured yet.
    first = baselines.measure("uid-1", ("2.0.0", 0), {"pod-a": before})
    assert analysis.canary_measurement(first).requests == 0
    later = baselines.measure("uid-1", ("2.0.0", 0), {"pod-a": after})
    assert analysis.canary_measurement(later).requests == 21
    # A pod first seen in the step counts from its first scrape on.
    both = baselines.measure("uid-1", ("2.0.0", 0), {"pod-a": after, "pod-b": after})
    assert analysis.canary_measurement(both).requests == 21
    # The next step starts from zero again; other models are apart.
    assert analysis.canary_measurement(
        baselines.measure("uid-1", ("2.0.0", 1), {"pod-a": after})
    ) == analysis.canary_measurement(analysis.Scrape({}))
    assert baselines.measure("uid-2", ("2.0.0", 0), {"pod-a": after}).samples
    assert (
        analysis.canary_measurement(
            baselines.measure("uid-2", ("2.0.0", 0), {"pod-a": after})
        ).requests
        == 0
    )


def test_forgotten_baselines_start_over():
    baselines = analysis.Baselines()
    baselines.measure("uid-1", 0, {"pod-a": _page("candidate-before.txt")})
    baselines.forget("uid-1")
    baselines.forget("uid-unknown")
    measured = baselines.measure("uid-1", 0, {"pod-a": _page("candidate-after.txt")})
    assert analysis.canary_measurement(measured).requests == 0


def test_counting_starts_at_the_first_measurement_that_counted_and_restarts_with_the_step():
    baselines = analysis.Baselines()
    page = _page("candidate-before.txt")
    baselines.measure("uid-1", ("2.0.0", 0), {"pod-a": page})
    assert baselines.counting_since("uid-1", False, "2026-01-01T00:00:05Z") is None
    assert baselines.counting_since("uid-1", True, "2026-01-01T00:01:05Z") == "2026-01-01T00:01:05Z"
    assert baselines.counting_since("uid-1", True, "2026-01-01T00:01:10Z") == "2026-01-01T00:01:05Z"
    assert (
        baselines.counting_since("uid-1", False, "2026-01-01T00:01:15Z") == "2026-01-01T00:01:05Z"
    )
    baselines.measure("uid-1", ("2.0.1", 0), {"pod-a": page})
    assert baselines.counting_since("uid-1", False, "2026-01-01T00:02:00Z") is None
    baselines.forget("uid-1")
    assert baselines.counting_since("uid-2", False, "2026-01-01T00:02:00Z") is None
