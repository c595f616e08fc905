"""Shadow comparison: the answer a caller got against the shadow's answer, row by row."""

import pytest

from batcomputer_server.metrics import Metrics
from batcomputer_server.shadow import Comparison, Shadow, ShapeError, compare


def test_one_row():
    found = compare({"died": 0.75, "survived": 0.25}, {"died": 0.5, "survived": 0.5})
    assert found == Comparison({"died": [0.25], "survived": [0.25]}, top_flag_changed=0, rows=1)


def test_a_batch_and_a_changed_top_flag():
    served = [{"a": 0.9, "b": 0.1}, {"a": 0.4, "b": 0.6}]
    shadow = [{"a": 0.9, "b": 0.1}, {"a": 0.7, "b": 0.3}]
    found = compare(served, shadow)
    assert found.deltas == {"a": [0.0, pytest.approx(0.3)], "b": [0.0, pytest.approx(0.3)]}
    assert (found.top_flag_changed, found.rows) == (1, 2)


def test_a_tie_is_judged_the_same_way_for_both():
    found = compare({"a": 0.5, "b": 0.5}, {"b": 0.5, "a": 0.5})
    assert found.top_flag_changed == 0


@pytest.mark.parametrize(
    ("shadow", "message"),
    [
        ([{"a": 1.0}], "one answer is a batch"),
        ({"b": 1.0}, "flags ['b'] instead of ['a']"),
        ({"a": 1.0, "b": 0.0}, "flags ['a', 'b'] instead of ['a']"),
        ({"a": "1.0"}, "not an object of flag probabilities"),
        ({"a": True}, "not an object of flag probabilities"),
        ({"a": None}, "not an object of flag probabilities"),
        ("a", "not an object of flag probabilities"),
        ({"error": "the model is not ready", "field": None}, "not an object of flag"),
    ],
)
def test_another_shape_is_a_shape_error(shadow, message):
    with pytest.raises(ShapeError, match=message.replace("[", r"\[").replace("]", r"\]")):
        compare({"a": 1.0}, shadow)


def test_batches_of_other_lengths():
    with pytest.raises(ShapeError, match="1 rows instead of 2"):
        compare([{"a": 1.0}, {"a": 1.0}], [{"a": 1.0}])


def test_record_counts_rows_and_keeps_the_largest_delta():
    metrics = Metrics()
    shadow = Shadow("http://candidate.models.svc", 100, metrics)
    shadow.record(compare([{"a": 0.9, "b": 0.1}], [{"a": 0.2, "b": 0.8}]))
    shadow.record(compare({"a": 0.9, "b": 0.1}, {"a": 0.8, "b": 0.2}))
    page = metrics.exposition().decode()
    assert 'batcomputer_shadow_requests_total{outcome="compared"} 2.0' in page
    assert 'batcomputer_shadow_rows_total{top_flag="changed"} 1.0' in page
    assert 'batcomputer_shadow_rows_total{top_flag="same"} 1.0' in page
    assert 'batcomputer_shadow_probability_delta_max{flag="a"} 0.7' in page
    assert 'batcomputer_shadow_probability_delta_count{flag="b"} 2.0' in page


def test_an_unlucky_toss_copies_nothing():
    metrics = Metrics()
    shadow = Shadow("http://candidate.models.svc", 25, metrics, chance=lambda: 0.25)
    shadow.offer(b"{}", {"a": 1.0})
    assert "outcome=" not in metrics.exposition().decode()


@pytest.mark.parametrize(
    ("url", "percent", "message"),
    [
        ("https://candidate", 50, "not an http:// URL"),
        ("candidate:80", 50, "not an http:// URL"),
        ("http://candidate", 0, "outside 1..100"),
        ("http://candidate", 100.5, "outside 1..100"),
    ],
)
def test_bad_settings(url, percent, message):
    with pytest.raises(ValueError, match=message):
        Shadow(url, percent, Metrics())
