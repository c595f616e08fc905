"""POST /api/predict's fast way for batches: a body that msgspec decodes into valid rows is
scored without orjson or ``encode_many``, and every body, one object or a batch, gets the
very status and bytes, drift observations and shadow copies that the orjson way gives it."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest
from _server_bundles import training_data, write_bundle
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batcomputer_bundle import reference
from batcomputer_server.drift import ROWS_PER_REQUEST, DriftMonitor
from batcomputer_server.metrics import Metrics
from batcomputer_server.predictor import Predictor
from batcomputer_server.scoring import Scorer

MAX_ROWS = 5
PASSENGER = {"sex": "female", "pclass": "1st", "age": 29.0, "sibsp": 1}
# Feature names that are no Python identifiers, or are a Struct's own attributes; one
# number and one integer without bounds.
ODD_LOOKUP = {
    "__init__": {"no": 0, "yes": 1},
    "class of travel": {"1st": 0, "2nd": 1, "3rd": 2},
    "fare": {"type": "number"},
    "rows": {"type": "integer"},
}
ODD_PASSENGER = {"__init__": "yes", "class of travel": "2nd", "fare": 7.25, "rows": 3}


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    return Predictor.load(write_bundle(tmp_path_factory.mktemp("titanic") / "titanic" / "1.0.0"))


@pytest.fixture(scope="module")
def odd_predictor(tmp_path_factory):
    folder = tmp_path_factory.mktemp("odd") / "odd" / "1.0.0"
    return Predictor.load(write_bundle(folder, lookup=ODD_LOOKUP))


class _Recorder:
    """A drift monitor over the predictor's inputs and a shadow, recording what they see."""

    def __init__(self, predictor: Predictor, rows_per_request: int = ROWS_PER_REQUEST) -> None:
        matrix, _ = training_data()
        section = reference.from_training(predictor.features, matrix)
        references = reference.parse({reference.MANIFEST_KEY: section}, predictor.features)
        self.sink: list[tuple[str, str, float]] = []
        self.monitor = DriftMonitor(
            references, self, clock=lambda: 0.0, min_rows=1, rows_per_request=rows_per_request
        )
        self.mirrored: list[tuple[bytes, object]] = []

    def out_of_range(self, name: str, count: int) -> None:
        self.sink.append(("out_of_range", name, count))

    def unseen_category(self, name: str, count: int) -> None:
        self.sink.append(("unseen_category", name, count))

    def psi(self, name: str, value: float) -> None:
        self.sink.append(("psi", name, value))

    def mirror(self, body: bytes, answer: object) -> None:
        self.mirrored.append((body, answer))

    def seen(self) -> tuple[object, ...]:
        return self.sink, self.monitor.report(), self.mirrored


def _scorer(predictor: Predictor, recorder: _Recorder) -> Scorer:
    return Scorer(
        predictor,
        Metrics(),
        MAX_ROWS,
        None,
        recorder.monitor.observe_rows,
        mirror=recorder.mirror,
    )


class _OrjsonOnly(Predictor):
    """The same predictor whose batches all go the orjson way."""

    def __init__(self, predictor: Predictor) -> None:
        self.__dict__.update(predictor.__dict__)

    def batch_decoder(self, max_rows):
        return lambda body: None


def _both_ways(predictor: Predictor, *bodies: bytes) -> tuple[tuple, tuple]:
    """(status, body) of each body and what drift and the shadow saw, the fast way and
    the orjson way."""
    answers = []
    for way in (predictor, _OrjsonOnly(predictor)):
        recorder = _Recorder(predictor)
        scorer = _scorer(way, recorder)
        statuses = [scorer.score("application/json", body) for body in bodies]
        answers.append((statuses, *recorder.seen()))
    return answers[0], answers[1]


def _batch(*rows: object) -> bytes:
    return json.dumps(list(rows)).encode()


def _fast(predictor: Predictor, body: bytes) -> bool:
    return predictor.batch_decoder(MAX_ROWS)(body) is not None


def _with(**changes: object) -> dict:
    return {**PASSENGER, **changes}


VALID_BATCHES = [
    _batch(PASSENGER),
    _batch(PASSENGER, _with(sex="male", pclass="3rd", age=0.42, sibsp=8)),
    _batch(*[_with(age=80.0, sibsp=0)] * MAX_ROWS),
    _batch(_with(age=80)),  # an integer for a number
    _batch(_with(sibsp=2.0)),  # a whole float for an integer
    _batch(_with(sibsp=-0.0)),
    _batch(_with(sibsp=-0)),
    _batch(_with(age=1e1)),
    b'[{"sex":"m\\u0061le","pclass":"1st","\\u0061ge":29.5,"sibsp":1}]',
    b'[ {"sex" : "male" , "pclass":"2nd","age":3E1,"sibsp":1e0} ]\r\n\t ',
    # The same input twice: orjson keeps the last, and so does msgspec.
    b'[{"sex":"male","sex":"female","pclass":"1st","age":1,"age":50,"sibsp":1}]',
    b'[{"sex":"female","pclass":"1st","age":29.0000000000000000000001,"sibsp":1}]',
    b'[{"sex":"female","pclass":"1st","age":0.42000000000000000001,"sibsp":1}]',
    b'[{"sex":"female","pclass":"1st","age":79.99999999999999999999,"sibsp":7.0e0}]',
]


@pytest.mark.parametrize("body", VALID_BATCHES)
def test_valid_batches_are_scored_the_fast_way_to_the_same_answer(predictor, body):
    assert _fast(predictor, body)
    fast, orjson_way = _both_ways(predictor, body)
    assert fast == orjson_way
    assert fast[0][0][0] == 200
    decoded = predictor.batch_decoder(MAX_ROWS)(body)
    assert decoded.matrix.tobytes() == predictor.encode_many(orjson.loads(body)).tobytes()


NESTED = b"[" * 5000 + b"]" * 5000
REFUSED_BODIES = [
    b"",
    b"[]",
    b"{}",
    b"null",
    b"1",
    b'"a batch"',
    b"[[]]",
    b"[null]",
    b"[1]",
    b'["x"]',
    b"[{}]",
    # Whitespace first, or one object (the single-row way), valid or not.
    b' \n\t\r[ {"sex" : "male" , "pclass":"2nd","age":3E1,"sibsp":1e0} ]',
    orjson.dumps(PASSENGER),
    orjson.dumps(_with(sex="male", pclass="3rd", age=80, sibsp=8.0)),
    b' {"sibsp":-0.0,"age":0.42,"pclass":"2nd","sex":"m\\u0061le","sex":"female"} ',
    orjson.dumps({**PASSENGER, "age": "old"}),
    orjson.dumps({**PASSENGER, "sibsp": 1.5}),
    orjson.dumps({**PASSENGER, "fare": 1.5}),
    orjson.dumps({k: v for k, v in PASSENGER.items() if k != "age"}),
    b'{"sex":"female","pclass":"1st","age":1,"sibsp":1}{}',
    b'{"sex":"female","pclass":"1st","age":1,"sibsp":NaN}',
    _batch(PASSENGER, 1),
    _batch(*[PASSENGER] * (MAX_ROWS + 1)),
    _batch(*[{"sex": "nobody"}] * (MAX_ROWS + 1)),
    _batch(_with(age=True)),
    _batch(_with(sibsp=False)),
    _batch(_with(sex=True)),
    _batch(_with(age=None)),
    _batch(_with(sex=None)),
    _batch(_with(sex=1)),
    _batch(_with(age="29")),
    _batch(_with(age=[29])),
    _batch(_with(age={"years": 29})),
    _batch(_with(sex=["female"])),
    _batch(_with(sex={"female": 1})),
    _batch(_with(sex="Female")),
    _batch(_with(sex="female ")),
    _batch(_with(sex="")),
    _batch(_with(age=80.00000000000001)),
    _batch(_with(age=0.41999999999999993)),
    _batch(_with(age=-0.0)),
    _batch(_with(age=0)),
    _batch(_with(sibsp=2.5)),
    _batch(_with(sibsp=9)),
    _batch(_with(sibsp=-1)),
    _batch(_with(sibsp=1e300)),
    _batch(_with(sibsp=5e-324)),
    _batch(_with(sibsp=0.9999999999999999)),
    _batch(_with(age=2**63 - 1)),
    _batch(_with(age=2**63)),
    _batch(_with(age=2**64 - 1)),
    _batch(_with(age=-(2**63) - 1)),
    b'[{"sex":"female","pclass":"1st","age":18446744073709551616,"sibsp":1}]',
    b'[{"sex":"female","pclass":"1st","age":' + b"9" * 400 + b',"sibsp":1}]',
    b'[{"sex":"female","pclass":"1st","age":1e400,"sibsp":1}]',
    b'[{"sex":"female","pclass":"1st","age":-1e400,"sibsp":1}]',
    b'[{"sex":"female","pclass":"1st","age":NaN,"sibsp":1}]',
    b'[{"sex":"female","pclass":"1st","age":Infinity,"sibsp":1}]',
    b'[{"sex":"female","pclass":"1st","age":-Infinity,"sibsp":1}]',
    b'[{"sex":"female","pclass":"1st","age":01,"sibsp":1}]',
    b'[{"sex":"female","pclass":"1st","age":1.,"sibsp":1}]',
    b'[{"sex":"female","pclass":"1st","age":.5,"sibsp":1}]',
    b'[{"sex":"female","pclass":"1st","age":+1,"sibsp":1}]',
    b'[{"sex":"female","pclass":"1st","age":0x10,"sibsp":1}]',
    b'[{"sex":"female","pclass":"1st","age":1e,"sibsp":1}]',
    b'[{"sex":"\\female","pclass":"1st","age":1,"sibsp":1}]',
    b'[{"sex":"fe\nmale","pclass":"1st","age":1,"sibsp":1}]',
    b'[{"sex":"female\\ud800","pclass":"1st","age":1,"sibsp":1}]',
    b'[{"sex":"female","pclass":"1st","age":1,"sibsp":1,"\\udc00":1}]',
    b'[{"sex":"female","pclass":"1st","age":1,"sibsp":1,"\xff":1}]',
    b'[{"sex":"fem\xc3ale","pclass":"1st","age":1,"sibsp":1}]',
    b'[{"sex":"female","pclass":"1st","age":1,"sibsp":1}]\xff',
    b'\xef\xbb\xbf[{"sex":"female","pclass":"1st","age":1,"sibsp":1}]',
    b'[{"sex":"female","pclass":"1st","age":1,"sibsp":1}]\x00',
    b'[{"sex":"female","pclass":"1st","age":1,"sibsp":1}]\x0c',
    b'[{"sex":"female","pclass":"1st","age":1,"sibsp":1}] []',
    b'[{"sex":"female","pclass":"1st","age":1,"sibsp":1},]',
    b'[{"sex":"female","pclass":"1st","age":1,"sibsp":1,}]',
    b'[{"sex":"female","pclass":"1st","age":1,"sibsp":1}',
    b'[{"sex":"female","pclass":"1st","age":1,"sibsp":1]',
    # The same input twice, the last one wrong (orjson keeps it), or the first one.
    b'[{"sex":"female","pclass":"1st","age":1,"sibsp":1,"age":"old"}]',
    b'[{"sex":"female","pclass":"1st","age":"old","sibsp":1,"age":3}]',
    _batch({k: v for k, v in PASSENGER.items() if k != "sibsp"}),
    _batch({**PASSENGER, "fare": 7.25}),
    _batch({**PASSENGER, "SEX": "male"}),
    _batch(PASSENGER, _with(age=200)),
    _batch(PASSENGER, PASSENGER, _with(sex="unknown", age=-5)),
    b"[" + orjson.dumps(PASSENGER)[:-1] + b',"deep":' + NESTED + b"}]",
    b'[{"sex":"female","pclass":"1st","age":' + NESTED + b',"sibsp":1}]',
    NESTED,
]


@pytest.mark.parametrize("body", REFUSED_BODIES)
def test_anything_else_gets_the_answer_it_always_got(predictor, body):
    assert not _fast(predictor, body)
    fast, orjson_way = _both_ways(predictor, body)
    assert fast == orjson_way


def test_an_oversized_batch_is_still_a_413_and_drift_still_sees_it(predictor):
    body = _batch(*[_with(age=70.0)] * (MAX_ROWS + 1))
    fast, orjson_way = _both_ways(predictor, body)
    assert fast == orjson_way
    [(status, _)] = fast[0]
    assert status == 413
    assert fast[2]["inputs"]["age"]["window_values"] == MAX_ROWS + 1


@pytest.mark.parametrize("rows_per_request", [ROWS_PER_REQUEST, 5])
@pytest.mark.parametrize("rows", [1, ROWS_PER_REQUEST - 1, ROWS_PER_REQUEST, 17, 40, 1000])
def test_drift_sees_the_rows_it_would_pick_from_a_large_batch(predictor, rows, rows_per_request):
    rng = np.random.default_rng(rows)
    batch = [
        _with(
            sex=str(rng.choice(["female", "male"])),
            age=float(rng.uniform(0.42, 80.0)),
            sibsp=int(rng.integers(0, 9)),
        )
        for _ in range(rows)
    ]
    answers = []
    for way in (predictor, _OrjsonOnly(predictor)):
        recorder = _Recorder(predictor, rows_per_request)
        scorer = Scorer(way, Metrics(), 1000, None, recorder.monitor.observe_rows)
        assert scorer.score("application/json", orjson.dumps(batch))[0] == 200
        answers.append(recorder.seen())
    assert answers[0] == answers[1]


def test_unbounded_inputs_and_odd_feature_names(odd_predictor):
    valid = [
        _batch(ODD_PASSENGER),
        _batch({**ODD_PASSENGER, "fare": -1e30, "rows": -(2**63)}),
        _batch({**ODD_PASSENGER, "fare": 2**63 - 1, "rows": 2**63 - 1}),
    ]
    refused = [
        _batch({**ODD_PASSENGER, "rows": 2**63}),
        _batch({**ODD_PASSENGER, "fare": 2**64 - 1, "rows": 1.5}),
        b'[{"__init__":"yes","class of travel":"2nd","fare":1e400,"rows":1}]',
        b'[{"__init__":"yes","class of travel":"2nd","fare":' + b"9" * 30 + b',"rows":1}]',
        _batch({**ODD_PASSENGER, "input_0": "yes"}),
        _batch({k: v for k, v in ODD_PASSENGER.items() if k != "__init__"}),
    ]
    for body in valid:
        assert _fast(odd_predictor, body)
    for body in refused:
        assert not _fast(odd_predictor, body)
    fast, orjson_way = _both_ways(odd_predictor, *valid, *refused)
    assert fast == orjson_way


def test_a_model_failing_at_run_time_fails_the_fast_way_too(predictor, monkeypatch):
    def failing(encoded):
        raise RuntimeError("engine refused the input")

    monkeypatch.setattr(predictor.engine, "probabilities", failing)
    scorer = Scorer(predictor, Metrics(), MAX_ROWS, None)
    with pytest.raises(RuntimeError, match="engine refused"):
        scorer.score("application/json", _batch(PASSENGER))


def _number_texts() -> st.SearchStrategy[str]:
    """JSON numbers, and text that only looks like one."""
    well_formed = st.from_regex(r"-?(0|[1-9][0-9]{0,24})(\.[0-9]{1,24})?([eE][-+]?[0-9]{1,3})?")
    return st.one_of(
        well_formed,
        st.floats(allow_nan=False, allow_infinity=False).map(repr),
        st.integers(min_value=-(2**70), max_value=2**70).map(str),
        st.from_regex(r"[-+.0-9eE]{1,8}"),
    )


def _values(labels: list[str]) -> st.SearchStrategy[str]:
    strings = st.one_of(st.sampled_from(labels), st.text(max_size=3)).map(json.dumps)
    other = st.sampled_from(["true", "false", "null", "[]", "{}", "[1]", "NaN", "-Infinity"])
    return st.one_of(strings, _number_texts(), other)


GOOD_VALUES = {
    "sex": st.sampled_from(["female", "male"]).map(json.dumps),
    "pclass": st.sampled_from(["1st", "2nd", "3rd"]).map(json.dumps),
    "age": st.one_of(st.floats(0.42, 80.0).map(repr), st.integers(1, 80).map(str)),
    "sibsp": st.one_of(st.integers(0, 8).map(str), st.integers(0, 8).map(lambda n: f"{n}.0")),
}


@st.composite
def _rows(draw) -> str:
    """One JSON object in text, mostly a valid one with its inputs in any order; else
    with inputs missing, repeated or unknown, and values of any JSON kind."""
    names = draw(st.permutations(list(GOOD_VALUES)))
    any_value = _values(["female", "male", "1st", "2nd", "3rd"])
    if draw(st.integers(0, 9)) == 0:
        names = names[: len(names) - draw(st.integers(0, 1))]
        names += draw(st.lists(st.sampled_from([*GOOD_VALUES, "fare"]), max_size=2))
        values = [draw(st.one_of(GOOD_VALUES.get(name, any_value), any_value)) for name in names]
    else:
        values = [draw(GOOD_VALUES[name]) for name in names]
    return "{" + ",".join(f"{json.dumps(n)}:{v}" for n, v in zip(names, values, strict=True)) + "}"


_BODIES = st.one_of(
    _rows(), st.lists(_rows(), min_size=0, max_size=MAX_ROWS + 1).map(lambda r: f"[{','.join(r)}]")
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_BODIES)
def test_any_body_gets_the_same_answer_either_way(predictor, text):
    body = text.encode()
    fast, orjson_way = _both_ways(predictor, body)
    assert fast == orjson_way


@settings(max_examples=300, deadline=None)
@given(_number_texts())
def test_numbers_are_read_to_the_same_float_either_way(predictor, text):
    bodies = [
        f'[{{"sex":"male","pclass":"2nd","age":{text},"sibsp":1}}]'.encode(),
        f'[{{"sex":"male","pclass":"2nd","age":29.5,"sibsp":{text}}}]'.encode(),
    ]
    for body in bodies:
        decoded = predictor.batch_decoder(MAX_ROWS)(body)
        if decoded is not None:
            matrix = predictor.encode_many(orjson.loads(body))
            assert decoded.matrix.tobytes() == matrix.tobytes()
            assert np.isfinite(decoded.matrix).all()
    fast, orjson_way = _both_ways(predictor, *bodies)
    assert fast == orjson_way
