"""Shadow comparison: the answer a caller got against the shadow's answer, row by row."""

import re

import pytest

from batcomputer_server.metrics import Metrics
from batcomputer_server.shadow import (
    Comparison,
    Settings,
    Shadow,
    ShadowFile,
    ShapeError,
    compare,
    parse_settings,
)


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
        ("http://candidate", 0, "not above 0 and at most 100"),
        ("http://candidate", 100.5, "not above 0 and at most 100"),
    ],
)
def test_bad_settings(url, percent, message):
    with pytest.raises(ValueError, match=message):
        Shadow(url, percent, Metrics())


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"{}", None),
        (
            b'{"url": "http://crime-v2-0-0.models.svc"}',
            Settings("http://crime-v2-0-0.models.svc", 100),
        ),
        (b'{"url": "http://c:8080/", "percent": 12.5}', Settings("http://c:8080/", 12.5)),
    ],
)
def test_settings_file(raw, expected):
    assert parse_settings(raw) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "not JSON"),
        (b"url=http://c", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"url": "http://c", "percent": 0}', "percent: 0 is not a number above 0"),
        (b'{"url": "http://c", "percent": 101}', "percent: 101"),
        (b'{"url": "http://c", "percent": true}', "percent: True"),
        (b'{"url": "http://c", "percent": "50"}', "percent: '50'"),
        (b'{"url": "https://c"}', "url: 'https://c' is not an http:// URL"),
        (b'{"url": 5}', "url: 5"),
        (b'{"percent": 50}', "url: None"),
        (b'{"url": "http://c", "weight": 5}', "unknown key 'weight'"),
        (b'{"url": "http://c", "x": "' + b"a" * 5000 + b'"}', "larger than 4096 bytes"),
    ],
)
def test_bad_settings_file(raw, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_settings(raw)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_shadow_file_is_looked_at_every_few_seconds_and_a_bad_one_means_no_shadow(tmp_path):
    # Shares so small that no copy is ever sent: this test opens no socket.
    path = tmp_path / "shadow.json"
    clock = _Clock()
    switch = ShadowFile(path, Metrics(), 1.0, check_seconds=5, clock=clock)
    switch.offer(b"{}", {"a": 1.0})  # no file: no shadow
    assert switch.settings is None
    path.write_bytes(b'{"url": "http://127.0.0.1:9", "percent": 0.0001}')
    switch.offer(b"{}", {"a": 1.0})
    assert switch.settings is None  # not looked at again yet
    clock.now = 5
    switch.offer(b"{}", {"a": 1.0})
    assert switch.settings == Settings("http://127.0.0.1:9", 0.0001)
    path.write_bytes(b"{not json")
    clock.now = 10
    switch.offer(b"{}", {"a": 1.0})
    assert switch.settings is None
    path.write_bytes(b'{"url": "http://127.0.0.2:9", "percent": 0.0002}')
    clock.now = 15
    switch.offer(b"{}", {"a": 1.0})
    assert switch.settings == Settings("http://127.0.0.2:9", 0.0002)
    path.unlink()
    clock.now = 20
    switch.offer(b"{}", {"a": 1.0})
    assert switch.settings is None
