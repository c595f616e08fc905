"""spec.rollout: the strategies, their defaults, and every combination the CRD cannot refuse."""

import re
from pathlib import Path

import pytest
import yaml

from batcomputer_operator.rollout_spec import (
    Analysis,
    CanaryStep,
    RolloutError,
    RolloutSpec,
    Strategy,
    parse_duration,
    parse_rollout,
)
from batcomputer_operator.spec import SpecError, parse_spec

CRD = yaml.safe_load(
    (Path(__file__).resolve().parents[2] / "crds" / "batmodels.batcomputer.io.yaml").read_text()
)
ROLLOUT = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
    "properties"
]["rollout"]


def _spec(rollout, replicas=2):
    raw = {"version": "1.0.0", "source": {"uri": "http://blob/m/1.0.0"}, "replicas": replicas}
    if rollout is not ...:
        raw["rollout"] = rollout
    return parse_spec(raw)


def _rollout(rollout, replicas=2):
    return parse_rollout(rollout, replicas)


def test_no_rollout_is_blue_green():
    assert _spec(...).rollout == RolloutSpec(strategy=Strategy.BLUE_GREEN)
    assert _rollout({}).strategy is Strategy.BLUE_GREEN
    assert _rollout({"strategy": "BlueGreen"}) == RolloutSpec()


def test_canary_steps_with_default_pause_and_analysis():
    rollout = _rollout(
        {
            "strategy": "Canary",
            "steps": [
                {"weight": 10, "pause": "30s"},
                {"weight": 50, "pause": "2m"},
                {"weight": 90},
            ],
            "analysis": {"maxErrorRatio": 0, "maxP99LatencySeconds": 0.25, "minRequests": 5},
        }
    )
    assert rollout.strategy is Strategy.CANARY
    assert rollout.steps == (CanaryStep(10, 30), CanaryStep(50, 120), CanaryStep(90, 60))
    assert rollout.analysis == Analysis(
        max_error_ratio=0.0, max_p99_latency_seconds=0.25, max_disagreement=0.05, min_requests=5
    )


def test_shadow_defaults_and_values():
    assert _rollout({"strategy": "Shadow"}) == RolloutSpec(
        Strategy.SHADOW, mirror_percent=100, duration_seconds=300
    )
    rollout = _rollout(
        {
            "strategy": "Shadow",
            "mirrorPercent": 25,
            "duration": "1h",
            "analysis": {"maxDisagreement": 0.1, "maxErrorRatio": 0.5},
        }
    )
    assert (rollout.mirror_percent, rollout.duration_seconds) == (25, 3600)
    assert rollout.analysis.max_disagreement == 0.1
    assert rollout.analysis.max_error_ratio == 0.5


def test_a_stopped_canary_model_needs_no_split():
    assert _rollout({"strategy": "Canary", "steps": [{"weight": 50}]}, replicas=0).steps


@pytest.mark.parametrize(
    ("rollout", "replicas", "message"),
    [
        ({"strategy": "Shadow", "steps": [{"weight": 10}]}, 2, "spec.rollout.steps: applies to"),
        ({"strategy": "Canary", "steps": [{"weight": 10}], "mirrorPercent": 5}, 2, "mirrorPercent"),
        ({"strategy": "Canary", "steps": [{"weight": 10}], "duration": "5m"}, 2, "duration"),
        ({"mirrorPercent": 50}, 2, "applies to strategy Shadow only, not BlueGreen"),
        ({"steps": [{"weight": 50}]}, 2, "applies to strategy Canary only, not BlueGreen"),
        ({"analysis": {"minRequests": 1}}, 2, "spec.rollout.analysis: applies to"),
        ({"strategy": "Canary"}, 2, "spec.rollout.steps: required for strategy Canary"),
        ({"strategy": "Canary", "steps": []}, 2, "a list of 1 to 10"),
        ({"strategy": "Canary", "steps": [{"weight": 10}] * 11}, 2, "a list of 1 to 10"),
        ({"strategy": "Canary", "steps": {"weight": 10}}, 2, "spec.rollout.steps"),
        ({"strategy": "Canary", "steps": [{"weight": 50}, {"weight": 50}]}, 2, "strictly increase"),
        ({"strategy": "Canary", "steps": [{"weight": 50}, {"weight": 10}]}, 2, "steps[1].weight"),
        ({"strategy": "Canary", "steps": [{"weight": 0}]}, 2, "steps[0].weight: 0 is outside"),
        ({"strategy": "Canary", "steps": [{"weight": 100}]}, 2, "outside 1..99"),
        ({"strategy": "Canary", "steps": [{"weight": True}]}, 2, "is not an integer"),
        ({"strategy": "Canary", "steps": [{"weight": "10"}]}, 2, "is not an integer"),
        ({"strategy": "Canary", "steps": [{"pause": "1m"}]}, 2, "weight: None"),
        ({"strategy": "Canary", "steps": ["10%"]}, 2, "an object with weight"),
        ({"strategy": "Canary", "steps": [{"weight": 5, "wait": "1m"}]}, 2, "steps[0]"),
        ({"strategy": "Canary", "steps": [{"weight": 5, "pause": "1d"}]}, 2, "steps[0].pause"),
        ({"strategy": "Canary", "steps": [{"weight": 5, "pause": "25h"}]}, 2, "longer than 24h"),
        ({"strategy": "Canary", "steps": [{"weight": 5}]}, 1, "spec.replicas of at least 2"),
        ({"strategy": "Shadow", "mirrorPercent": 0}, 2, "mirrorPercent: 0 is outside 1..100"),
        ({"strategy": "Shadow", "mirrorPercent": 101}, 2, "outside 1..100"),
        ({"strategy": "Shadow", "duration": "0s"}, 2, "spec.rollout.duration"),
        ({"strategy": "Shadow", "duration": 300}, 2, "spec.rollout.duration"),
        ({"strategy": "Blue"}, 2, "strategy: 'Blue' is not one of BlueGreen, Canary, Shadow"),
        ({"strategy": "canary"}, 2, "is not one of"),
        (
            {"strategy": "Canary", "steps": [{"weight": 5}], "colour": 1},
            2,
            "unknown field 'colour'",
        ),
        ("Canary", 2, "spec.rollout: 'Canary' is not an object"),
        (
            {"strategy": "Canary", "steps": [{"weight": 5}], "analysis": {"maxDisagreement": 0.1}},
            2,
            "maxDisagreement: applies to strategy Shadow only, not Canary",
        ),
        ({"strategy": "Shadow", "analysis": {"maxErrorRatio": 1.5}}, 2, "maxErrorRatio: 1.5"),
        ({"strategy": "Shadow", "analysis": {"maxErrorRatio": -0.1}}, 2, "maxErrorRatio"),
        ({"strategy": "Shadow", "analysis": {"maxErrorRatio": float("nan")}}, 2, "not a number"),
        ({"strategy": "Shadow", "analysis": {"maxErrorRatio": "1%"}}, 2, "not a number"),
        ({"strategy": "Shadow", "analysis": {"maxP99LatencySeconds": 0}}, 2, "must be above 0"),
        ({"strategy": "Shadow", "analysis": {"maxP99LatencySeconds": 61}}, 2, "outside 0..60"),
        ({"strategy": "Shadow", "analysis": {"minRequests": -1}}, 2, "minRequests"),
        ({"strategy": "Shadow", "analysis": {"minRequests": 2.5}}, 2, "not an integer"),
        ({"strategy": "Shadow", "analysis": {"maxErrors": 1}}, 2, "unknown field 'maxErrors'"),
        ({"strategy": "Shadow", "analysis": [1]}, 2, "analysis: [1] is not an object"),
    ],
)
def test_invalid_rollout_is_refused_naming_the_field(rollout, replicas, message):
    with pytest.raises(RolloutError) as caught:
        _rollout(rollout, replicas)
    assert message in str(caught.value)
    with pytest.raises(SpecError) as caught:
        _spec(rollout, replicas)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("rollout", "strategy"),
    [
        ({"strategy": "Canary", "steps": [{"weight": 10}]}, Strategy.CANARY),
        ({"strategy": "Shadow", "mirrorPercent": 50}, Strategy.SHADOW),
    ],
)
def test_every_strategy_is_carried_out(rollout, strategy):
    assert _spec(rollout, 2).rollout.strategy is strategy


@pytest.mark.parametrize(
    ("text", "seconds"), [("1s", 1), ("30s", 30), ("5m", 300), ("24h", 86400), ("1440m", 86400)]
)
def test_durations(text, seconds):
    assert parse_duration(text, "f") == seconds


@pytest.mark.parametrize("text", ["", "5", "m", "05m", "1.5m", "-1m", "1M", " 1m", "1m ", "1ms"])
def test_bad_durations(text):
    with pytest.raises(ValueError, match="is not a whole number with s, m or h"):
        parse_duration(text, "f")


def test_the_crd_pattern_and_the_parser_agree_on_durations():
    pattern = re.compile(ROLLOUT["properties"]["duration"]["pattern"])
    step_pattern = ROLLOUT["properties"]["steps"]["items"]["properties"]["pause"]["pattern"]
    assert step_pattern == pattern.pattern
    for text in ["1s", "30s", "5m", "99999h", "", "05m", "1.5m", "1d", "1m "]:
        accepted = True
        try:
            parse_duration(text, "f")
        except ValueError as error:
            accepted = "longer than 24h" in str(error)
        assert bool(pattern.match(text)) == accepted, text


def test_the_crd_bounds_are_the_parsers():
    props = ROLLOUT["properties"]
    assert props["strategy"]["enum"] == [s.value for s in Strategy]
    assert props["strategy"]["default"] == "BlueGreen"
    weight = props["steps"]["items"]["properties"]["weight"]
    assert (weight["minimum"], weight["maximum"]) == (1, 99)
    assert (props["steps"]["minItems"], props["steps"]["maxItems"]) == (1, 10)
    assert (props["mirrorPercent"]["minimum"], props["mirrorPercent"]["maximum"]) == (1, 100)
    analysis = props["analysis"]["properties"]
    assert set(analysis) == {
        "maxErrorRatio",
        "maxP99LatencySeconds",
        "maxDisagreement",
        "minRequests",
    }
    # No schema default for fields that belong to one strategy: the API server would add
    # them to every rollout and the operator would then refuse the other strategies.
    assert [name for name, node in props.items() if "default" in node] == ["strategy"]
    assert not any("default" in node for node in analysis.values())


def test_parse_rollout_alone_accepts_none():
    assert parse_rollout(None) == RolloutSpec()
