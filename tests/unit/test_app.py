"""The HTTP surface through Flask's test client: every client mistake is a named 4xx JSON error."""

import io
import json
import logging

import pytest
from _json_errors import assert_json_error
from _server_bundles import FLAGS, write_bundle

from batcomputer_server.app import create_app
from batcomputer_server.metrics import Metrics
from batcomputer_server.predictor import Predictor

PASSENGER = {"sex": "female", "pclass": "1st", "age": 29.0, "sibsp": 1}
PREFIX = "/models/titanic"


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    return Predictor.load(write_bundle(tmp_path_factory.mktemp("bundle") / "titanic" / "1.0.0"))


@pytest.fixture(scope="module")
def client(predictor):
    app = create_app(predictor, max_body_bytes=4096, max_batch_rows=10, root_path=PREFIX)
    return app.test_client()


def _post(client, body, path="/api/predict", content_type="application/json"):
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    # Spelled out, as HTTP clients do, also for an empty body.
    length = str(len(data.encode() if isinstance(data, str) else data))
    return client.post(
        path, data=data, content_type=content_type, environ_overrides={"CONTENT_LENGTH": length}
    )


def test_a_single_prediction_is_an_object_of_flag_probabilities(client):
    response = _post(client, PASSENGER)
    assert response.status_code == 200
    body = response.get_json()
    assert list(body) == FLAGS
    assert sum(body.values()) == pytest.approx(1.0)


def test_a_batch_gives_an_array_in_the_same_order(client):
    rows = [PASSENGER, {**PASSENGER, "sex": "male", "pclass": "3rd"}]
    response = _post(client, rows)
    assert response.status_code == 200
    body = response.get_json()
    assert body == [_post(client, row).get_json() for row in rows]
    assert body[0]["survived"] > body[1]["survived"]


def test_a_chunked_body_without_content_length_is_scored_too(client):
    response = client.post(
        "/api/predict",
        input_stream=io.BytesIO(json.dumps(PASSENGER).encode()),
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
    )
    assert response.status_code == 200
    assert list(response.get_json()) == FLAGS


@pytest.mark.parametrize(
    ("body", "field", "allowed"),
    [
        (
            {k: v for k, v in PASSENGER.items() if k != "age"},
            "age",
            {"minimum": 0.42, "maximum": 80.0},
        ),
        ({**PASSENGER, "cabin": "B5"}, "cabin", ["sex", "pclass", "age", "sibsp"]),
        ({**PASSENGER, "sex": "robot"}, "sex", ["female", "male"]),
        ({**PASSENGER, "pclass": 1}, "pclass", ["1st", "2nd", "3rd"]),
        ({**PASSENGER, "age": "old"}, "age", {"minimum": 0.42, "maximum": 80.0}),
        ({**PASSENGER, "age": 120}, "age", {"minimum": 0.42, "maximum": 80.0}),
        ({**PASSENGER, "sibsp": 2.5}, "sibsp", {"minimum": 0.0, "maximum": 8.0}),
        ({**PASSENGER, "sibsp": None}, "sibsp", {"minimum": 0.0, "maximum": 8.0}),
    ],
    ids=[
        "missing",
        "unknown",
        "not-allowed",
        "wrong-type",
        "string-number",
        "range",
        "fraction",
        "null",
    ],
)
def test_bad_inputs_get_400_naming_the_field_and_what_it_allows(client, body, field, allowed):
    assert_json_error(_post(client, body), 400, field, allowed)
    batch = assert_json_error(_post(client, [PASSENGER, body]), 400, field, allowed)
    assert batch["row"] == 1


@pytest.mark.parametrize(
    "body",
    ["{", "", "[1, 2", '{"age": NaN}', '{"age": Infinity}', b"\xff\xfe", "[" * 4000],
    ids=["truncated", "empty", "open-array", "nan", "infinity", "not-utf8", "deep"],
)
def test_malformed_json_is_a_400(client, body):
    assert_json_error(_post(client, body), 400)


def test_a_post_without_content_length_or_chunked_body_is_a_411(client):
    response = client.post("/api/predict", environ_overrides={"CONTENT_TYPE": "application/json"})
    assert_json_error(response, 411)


@pytest.mark.parametrize(
    ("body", "field"),
    [("[]", None), ("3", None), ('"text"', None), ("null", None), ("[1]", None)],
)
def test_bodies_that_are_not_input_objects_are_a_400(client, body, field):
    assert_json_error(_post(client, body), 400, field=field)


def test_a_batch_row_that_is_not_an_object_is_named_by_index(client):
    body = assert_json_error(_post(client, [PASSENGER, 7]), 400)
    assert body["row"] == 1


def test_an_empty_batch_is_refused(client):
    body = assert_json_error(_post(client, []), 400)
    assert "non-empty" in body["error"]


def test_a_batch_over_the_row_limit_is_a_413(client):
    body = assert_json_error(_post(client, [PASSENGER] * 11), 413)
    assert body["allowed"] == {"minimum": 1, "maximum": 10}


def test_a_body_over_the_byte_limit_is_a_413(client):
    huge = json.dumps([PASSENGER] * 80)
    assert len(huge) > 4096
    assert_json_error(_post(client, huge), 413)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_a_wrong_content_type_is_a_415(client, content_type):
    assert_json_error(_post(client, PASSENGER, content_type=content_type), 415)


def test_a_json_content_type_with_charset_is_accepted(client):
    response = _post(client, PASSENGER, content_type="application/json; charset=utf-8")
    assert response.status_code == 200


def test_unknown_paths_and_wrong_methods_are_json_404_and_405(client):
    assert_json_error(client.get("/no/such/thing"), 404)
    wrong_method = client.get("/api/predict")
    assert assert_json_error(wrong_method, 405)["allowed"] == ["POST"]
    assert wrong_method.headers["Allow"] == "OPTIONS, POST"  # RFC 9110 §15.5.6
    assert client.delete("/api/info").headers["Allow"] == "GET, HEAD, OPTIONS"


def test_params_list_inputs_flags_and_a_valid_example(client):
    body = client.get("/api/predict/params").get_json()
    assert [entry["name"] for entry in body["inputs"]] == ["sex", "pclass", "age", "sibsp"]
    assert body["inputs"][0] == {"name": "sex", "type": "categorical", "values": ["female", "male"]}
    assert body["flags"] == FLAGS
    assert _post(client, body["example"]).status_code == 200


def test_info_reports_model_status_digests_engine_and_versions(client, predictor):
    body = client.get("/api/info").get_json()
    assert (body["name"], body["version"], body["status"]) == ("titanic", "1.0.0", "ready")
    assert body["engine"] == "onnxruntime"
    assert "agrees with scikit-learn" in body["engine_reason"]
    assert body["schema_digest"] == predictor.schema_digest
    assert set(body["bundle_digests"]) >= {"model.pkl", "lookup.pkl", "flags.pkl", "model.onnx"}
    assert {"python", "scikit-learn", "onnxruntime", "flask"} <= set(body["versions"])
    assert body["metrics"]["accuracy"] == 0.8


def test_openapi_and_swagger_json_are_the_same_document(client):
    first = client.get("/openapi.json").get_json()
    assert first == client.get("/swagger.json").get_json()
    assert first["servers"] == [{"url": "/"}]


def test_swagger_ui_is_served_with_local_assets_only(client):
    page = client.get("/api/docs").get_data(as_text=True)
    assert "SwaggerUIBundle" in page
    assert "https://" not in page and "http://" not in page
    asset = client.get("/api/docs/assets/swagger-ui-bundle.js")
    assert asset.status_code == 200 and len(asset.data) > 100_000
    assert_json_error(client.get("/api/docs/assets/../../app.py"), 404)


def test_the_batclient_page_needs_no_external_assets(client):
    response = client.get("/")
    page = response.get_data(as_text=True)
    assert response.status_code == 200 and "<form" in page
    assert "https://" not in page and "http://" not in page
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]


def test_health_readiness_and_metrics(client):
    assert client.get("/healthz").get_json() == {"status": "alive"}
    assert client.get("/readyz").get_json()["status"] == "ready"
    _post(client, [PASSENGER, PASSENGER])
    text = client.get("/metrics").get_data(as_text=True)
    assert 'batcomputer_model_info{engine="onnxruntime",name="titanic",version="1.0.0"} 1.0' in text
    assert (
        'batcomputer_http_requests_total{method="POST",route="/api/predict",status="200"}' in text
    )
    assert "batcomputer_predicted_rows_total" in text
    assert "batcomputer_http_request_duration_seconds_bucket" in text


def test_everything_answers_under_the_path_prefix_too(client):
    assert _post(client, PASSENGER, path=PREFIX + "/api/predict").status_code == 200
    document = client.get(PREFIX + "/openapi.json").get_json()
    assert document["servers"] == [{"url": PREFIX}]
    assert client.get(PREFIX + "/").status_code == 200
    assert client.get(PREFIX + "/api/docs/assets/swagger-ui.css").status_code == 200
    redirect = client.get(PREFIX)
    assert redirect.status_code == 308 and redirect.headers["Location"].endswith(PREFIX + "/")


def test_a_rewriting_ingress_announces_the_prefix_in_a_header(client):
    document = client.get("/openapi.json", headers={"X-Forwarded-Prefix": PREFIX + "/"})
    assert document.get_json()["servers"] == [{"url": PREFIX}]


def test_inputs_are_never_written_to_the_log(client, caplog):
    secret = "Mr. Sherlock-Holmes-221B"
    with caplog.at_level(logging.DEBUG):
        _post(client, {**PASSENGER, "sex": secret})
        _post(client, {**PASSENGER, secret: 1})
        _post(client, "{" + secret)
    assert secret not in caplog.text


def test_an_unready_server_stays_up_and_explains_why():
    app = create_app(
        None, load_error="sha256 mismatch for model.pkl", manifest=None, metrics=Metrics()
    )
    client = app.test_client()
    assert client.get("/healthz").status_code == 200
    body = assert_json_error(client.get("/readyz"), 503)
    assert "sha256 mismatch for model.pkl" in body["error"]
    assert_json_error(_post(client, PASSENGER), 503)
    info = client.get("/api/info").get_json()
    assert info["status"] == "unready" and "sha256 mismatch" in info["error"]
    assert "batcomputer_ready 0.0" in client.get("/metrics").get_data(as_text=True)


def test_a_model_failing_at_run_time_is_a_counted_json_500(tmp_path, caplog):
    # A verified model can still fail on some inputs (an engine raising on values its
    # self-check never used); a Canary's analysis must see those answers as errors.
    predictor = Predictor.load(write_bundle(tmp_path / "titanic" / "1.0.0"))
    probabilities = predictor.engine.probabilities

    def failing_for_the_old(encoded):
        if (encoded == 68.0).any():
            raise RuntimeError("engine refused the input")
        return probabilities(encoded)

    predictor.engine.probabilities = failing_for_the_old
    client = create_app(predictor, metrics=Metrics()).test_client()
    assert _post(client, PASSENGER).status_code == 200
    with caplog.at_level(logging.ERROR):
        answer = _post(client, {**PASSENGER, "age": 68.0})
    assert answer.status_code == 500
    assert answer.get_json()["error"] == "internal error; see the server log"
    assert "engine refused the input" in caplog.text
    text = client.get("/metrics").get_data(as_text=True)
    assert (
        'batcomputer_http_requests_total{method="POST",route="/api/predict",status="500"} 1.0'
        in text
    )
