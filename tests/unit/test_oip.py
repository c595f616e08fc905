"""Open Inference Protocol v2 routes through Flask's test client: the protocol's own examples,
the same answers and the same named 4xx errors as the friendly API."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _json_errors import assert_json_error
from _server_bundles import FLAGS, LOOKUP, training_data, write_bundle

from batcomputer_bundle import bundle, reference
from batcomputer_server.app import create_app
from batcomputer_server.metrics import Metrics
from batcomputer_server.predictor import Predictor

PASSENGERS = [
    {"sex": "female", "pclass": "1st", "age": 29.0, "sibsp": 1},
    {"sex": "male", "pclass": "3rd", "age": 40.5, "sibsp": 0},
]
INPUTS = ["sex", "pclass", "age", "sibsp"]
NUMERIC_TYPES = [
    "FP64",
    "FP32",
    "FP16",
    "INT64",
    "INT32",
    "INT16",
    "INT8",
    "UINT64",
    "UINT32",
    "UINT16",
    "UINT8",
]


def _with_references(folder):
    """The test bundle plus the reference distributions training would record."""
    manifest = bundle.read_manifest(folder)
    features = bundle.features_from_lookup(LOOKUP, feature_order=INPUTS)
    matrix, _ = training_data()
    manifest[reference.MANIFEST_KEY] = reference.from_training(features, matrix)
    manifest.pop("format")
    bundle.write_manifest(folder, manifest)
    return folder


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    folder = write_bundle(tmp_path_factory.mktemp("bundle") / "titanic" / "1.0.0")
    return Predictor.load(_with_references(folder))


@pytest.fixture(scope="module")
def metrics():
    return Metrics()


@pytest.fixture(scope="module")
def client(predictor, metrics):
    app = create_app(predictor, max_batch_rows=10, root_path="/models/titanic", metrics=metrics)
    return app.test_client()


def _tensors(rows, *, nested=False):
    tensors = []
    for name in INPUTS:
        values = [row[name] for row in rows]
        datatype = "BYTES" if name in ("sex", "pclass") else "FP64"
        shape = [len(values), 1] if nested else [len(values)]
        data = [[v] for v in values] if nested else values
        tensors.append({"name": name, "shape": shape, "datatype": datatype, "data": data})
    return tensors


def _infer(client, body, path="/v2/models/titanic/infer", **headers):
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    # Spelled out, as HTTP clients do, also for an empty body.
    length = len(data.encode() if isinstance(data, str) else data)
    headers = {"Content-Length": str(length), **headers}
    return client.post(path, data=data, content_type="application/json", headers=headers)


def test_server_health_and_metadata(client):
    assert client.get("/v2/health/live").get_json() == {"live": True}
    ready = client.get("/v2/health/ready")
    assert ready.status_code == 200
    assert ready.get_json() == {"ready": True}
    server = client.get("/v2").get_json()
    assert server["name"] == "batcomputer"
    assert server["extensions"] == []


def test_model_metadata_names_every_input_and_flag_as_a_tensor(client):
    for path in ("/v2/models/titanic", "/v2/models/titanic/versions/1.0.0"):
        response = client.get(path)
        assert response.status_code == 200
        metadata = response.get_json()
        assert metadata["name"] == "titanic"
        assert metadata["versions"] == ["1.0.0"]
        assert metadata["platform"] == "onnxruntime"
        assert metadata["inputs"] == [
            {"name": "sex", "datatype": "BYTES", "shape": [-1]},
            {"name": "pclass", "datatype": "BYTES", "shape": [-1]},
            {"name": "age", "datatype": "FP64", "shape": [-1]},
            {"name": "sibsp", "datatype": "FP64", "shape": [-1]},
        ]
        assert metadata["outputs"] == [
            {"name": flag, "datatype": "FP64", "shape": [-1]} for flag in FLAGS
        ]
    ready = client.get("/v2/models/titanic/versions/1.0.0/ready")
    assert ready.get_json() == {"name": "titanic", "ready": True}


@pytest.mark.parametrize(
    ("path", "field", "allowed"),
    [
        ("/v2/models/crime", "model_name", ["titanic"]),
        ("/v2/models/crime/ready", "model_name", ["titanic"]),
        ("/v2/models/titanic/versions/2.0.0", "model_version", ["1.0.0"]),
        ("/v2/models/titanic/versions/1.0/ready", "model_version", ["1.0.0"]),
    ],
)
def test_another_model_or_version_is_a_404_naming_the_served_one(client, path, field, allowed):
    body = assert_json_error(client.get(path), 404, field, allowed)
    assert "this server serves" in body["error"]
    inferred = _infer(
        client, {"inputs": _tensors(PASSENGERS)}, path.removesuffix("/ready") + "/infer"
    )
    assert_json_error(inferred, 404, field, allowed)


def test_infer_answers_one_fp64_tensor_per_flag_like_the_friendly_api(client, predictor):
    request = {"id": "42", "inputs": _tensors(PASSENGERS)}
    response = _infer(client, request)
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["model_name"] == "titanic"
    assert body["model_version"] == "1.0.0"
    assert body["id"] == "42"
    expected = predictor.predict_many(PASSENGERS)
    assert [output["name"] for output in body["outputs"]] == FLAGS
    for output in body["outputs"]:
        assert output["datatype"] == "FP64"
        assert output["shape"] == [2]
        assert output["data"] == [row[output["name"]] for row in expected]
    friendly = client.post("/api/predict", json=PASSENGERS).get_json()
    assert [row["survived"] for row in friendly] == body["outputs"][1]["data"]


def test_batch_by_one_tensors_versions_path_prefix_and_requested_outputs(client):
    request = {
        "inputs": _tensors(PASSENGERS, nested=True),
        "outputs": [{"name": "survived"}],
    }
    for path in (
        "/v2/models/titanic/versions/1.0.0/infer",
        "/models/titanic/v2/models/titanic/infer",
    ):
        body = _infer(client, request, path).get_json()
        assert [output["name"] for output in body["outputs"]] == ["survived"]
        assert "id" not in body
        assert len(body["outputs"][0]["data"]) == 2


@pytest.mark.parametrize("datatype", NUMERIC_TYPES)
def test_numeric_inputs_take_any_numeric_datatype(client, datatype):
    tensors = _tensors(PASSENGERS[:1])
    tensors[3]["datatype"] = datatype
    assert _infer(client, {"inputs": tensors}).status_code == 200


def test_the_protocols_published_example_request_is_refused_naming_the_inputs(client):
    # The request of the OIP REST specification's "Inference Request Examples", verbatim:
    # it is for another model, so this one names its own inputs.
    example = {
        "id": "42",
        "inputs": [
            {"name": "input0", "shape": [2, 2], "datatype": "UINT32", "data": [1, 2, 3, 4]},
            {"name": "input1", "shape": [3], "datatype": "BOOL", "data": [True]},
        ],
        "outputs": [{"name": "output0"}],
    }
    body = assert_json_error(_infer(client, example), 400, "input0", INPUTS)
    assert "unknown input tensor 'input0'" in body["error"]


def _replace(tensor_index, **changes):
    tensors = _tensors(PASSENGERS)
    tensors[tensor_index] = {**tensors[tensor_index], **changes}
    return {"inputs": tensors}


@pytest.mark.parametrize(
    ("request_body", "field", "allowed"),
    [
        ([], None, ["id", "parameters", "inputs", "outputs"]),
        ({"inputs": _tensors(PASSENGERS), "extra": 1}, "extra", None),
        ({"inputs": []}, "inputs", INPUTS),
        ({"inputs": {"sex": ["male"]}}, "inputs", INPUTS),
        ({"inputs": ["sex"]}, "inputs", None),
        ({"inputs": [{"shape": [1], "datatype": "BYTES", "data": ["male"]}]}, None, INPUTS),
        ({"inputs": _tensors(PASSENGERS)[:3]}, "sibsp", INPUTS),
        ({"inputs": [*_tensors(PASSENGERS), _tensors(PASSENGERS)[0]]}, "sex", INPUTS),
        (_replace(0, datatype="FP64"), "sex", ["BYTES"]),
        (_replace(2, datatype="BYTES"), "age", NUMERIC_TYPES),
        (_replace(2, datatype="BOOL"), "age", NUMERIC_TYPES),
        (_replace(2, datatype=None), "age", NUMERIC_TYPES),
        (_replace(2, shape=[3]), "age", None),
        (_replace(2, shape=[1, 2]), "age", None),
        (_replace(2, shape=[2, 1, 1]), "age", None),
        (_replace(2, shape="2"), "age", None),
        (_replace(2, shape=["2"]), "age", None),
        (_replace(2, shape=None), "age", None),
        (_replace(2, data=None), "age", None),
        (_replace(2, data=[]), "age", None),
        (_replace(2, data=[[29.0], 40.5]), "age", None),
        (_replace(2, data=[[[29.0]], [[40.5]]]), "age", None),
        (_replace(2, data=[29.0], shape=[1]), "age", {"minimum": 2, "maximum": 2}),
        (_replace(2, data=[29.0, 400.0]), "age", {"minimum": 0.42, "maximum": 80.0}),
        (_replace(2, data=[29.0, "40"]), "age", {"minimum": 0.42, "maximum": 80.0}),
        (_replace(2, data=[29.0, None]), "age", {"minimum": 0.42, "maximum": 80.0}),
        (_replace(3, data=[1.5, 0]), "sibsp", {"minimum": 0.0, "maximum": 8.0}),
        (_replace(1, data=["1st", "4th"]), "pclass", ["1st", "2nd", "3rd"]),
        (_replace(1, data=["1st", 3]), "pclass", ["1st", "2nd", "3rd"]),
        (_replace(0, parameters={"binary_data_size": 12}), "sex", None),
        ({"inputs": _tensors(PASSENGERS), "outputs": [{"name": "drowned"}]}, "drowned", FLAGS),
        ({"inputs": _tensors(PASSENGERS), "outputs": []}, "outputs", FLAGS),
        ({"inputs": _tensors(PASSENGERS), "outputs": ["died"]}, None, FLAGS),
        ({"inputs": _tensors(PASSENGERS), "id": 42}, "id", None),
        ({"inputs": _tensors(PASSENGERS), "parameters": []}, "parameters", None),
    ],
)
def test_bad_requests_get_400_naming_the_field_and_what_it_allows(
    client, request_body, field, allowed
):
    assert_json_error(_infer(client, request_body), 400, field, allowed)


def test_a_value_error_names_the_row_of_the_batch(client):
    body = assert_json_error(_infer(client, _replace(2, data=[29.0, 400.0])), 400, "age")
    assert body["row"] == 1


@pytest.mark.parametrize("body", ["{", " ", "[1,", b"\xff\xfe", '{"inputs": NaN}'])
def test_malformed_json_is_a_400(client, body):
    assert_json_error(_infer(client, body), 400)


def test_binary_tensor_data_wrong_type_and_large_batches_are_refused(client):
    binary = _infer(
        client, {"inputs": _tensors(PASSENGERS)}, **{"Inference-Header-Content-Length": "10"}
    )
    assert "binary_data=False" in assert_json_error(binary, 400)["error"]
    wrong_type = client.post("/v2/models/titanic/infer", data="inputs", content_type="text/plain")
    assert_json_error(wrong_type, 415)
    rows = PASSENGERS * 6  # 12 rows, the limit is 10
    body = assert_json_error(_infer(client, {"inputs": _tensors(rows)}), 413, "sex")
    assert body["allowed"] == {"minimum": 1, "maximum": 10}


def test_unknown_v2_paths_and_methods_are_json_errors(client):
    assert_json_error(client.get("/v2/repository/index"), 404)
    assert client.get("/v2/models/titanic/infer").status_code == 405
    assert _infer(client, "{}", "/v2/models/titanic").status_code == 405


def test_an_unready_server_is_live_but_not_ready():
    client = create_app(None, load_error="bundle.json not found").test_client()
    assert client.get("/v2/health/live").status_code == 200
    ready = client.get("/v2/health/ready")
    assert ready.status_code == 503
    assert ready.get_json() == {"ready": False}
    for path in ("/v2/models/titanic", "/v2/models/titanic/ready"):
        assert "bundle.json not found" in assert_json_error(client.get(path), 503)["error"]
    assert_json_error(_infer(client, {"inputs": _tensors(PASSENGERS)}), 503)


def test_both_apis_feed_the_input_drift_shown_in_info_and_metrics(predictor):
    metrics = Metrics()
    client = create_app(predictor, metrics=metrics).test_client()
    rng = np.random.default_rng(5)
    shifted = [
        {"sex": "female", "pclass": "1st", "age": float(rng.uniform(70, 80)), "sibsp": 0}
        for _ in range(60)
    ]
    for start in range(0, 60, 10):
        assert _infer(client, {"inputs": _tensors(shifted[start : start + 10])}).status_code == 200
        assert client.post("/api/predict", json=shifted[start : start + 10]).status_code == 200
    client.post("/api/predict", json={**PASSENGERS[0], "pclass": "steerage"})
    drift = client.get("/api/info").get_json()["drift"]
    assert drift["thresholds"] == {"moderate": 0.1, "significant": 0.25}
    assert drift["inputs"]["pclass"]["window_values"] >= 120
    assert drift["inputs"]["pclass"]["assessment"] == "significant"
    assert drift["inputs"]["age"]["psi"] > 0.25
    assert drift["inputs"]["pclass"]["unseen_category"] == 1
    text = metrics.exposition().decode()
    assert 'batcomputer_input_unseen_category_total{input="pclass"} 1.0' in text
    assert 'batcomputer_input_drift_psi{input="age"}' in text


def test_a_bundle_without_references_serves_and_says_drift_is_not_monitored(tmp_path):
    predictor = Predictor.load(write_bundle(tmp_path / "titanic" / "1.0.0"))
    client = create_app(predictor).test_client()
    assert client.post("/api/predict", json=PASSENGERS[0]).status_code == 200
    drift = client.get("/api/info").get_json()["drift"]
    assert "records no reference_distributions" in drift["error"]


def test_a_hostile_reference_section_does_not_stop_the_server(tmp_path):
    folder = write_bundle(tmp_path / "titanic" / "1.0.0")
    manifest = bundle.read_manifest(folder)
    manifest[reference.MANIFEST_KEY] = {"inputs": {"age": {"edges": "wide"}}}
    manifest.pop("format")
    bundle.write_manifest(folder, manifest)
    client = create_app(Predictor.load(folder)).test_client()
    assert _infer(client, {"inputs": _tensors(PASSENGERS)}).status_code == 200
    assert "bin edges" in client.get("/api/info").get_json()["drift"]["error"]
