"""The Open Inference Protocol v2 on the real ``batcomputer-server`` (gunicorn, 2 workers,
a real trained bundle), spoken by Triton's own HTTP client library, unchanged; and input
drift moving when callers send a shifted population."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from _server_process import running_server, wait_until_workers_loaded
from tritonclient.utils import InferenceServerException

from batcomputer_bundle import bundle

PASSENGERS = [
    {
        "pclass": "3rd",
        "sex": "male",
        "age": 30.0,
        "sibsp": 0,
        "parch": 0,
        "fare": 8.05,
        "embarked": "Southampton",
    },
    {
        "pclass": "1st",
        "sex": "female",
        "age": 38.0,
        "sibsp": 1,
        "parch": 0,
        "fare": 71.28,
        "embarked": "Cherbourg",
    },
]
CATEGORICAL = ("pclass", "sex", "embarked")


@pytest.fixture(scope="module")
def server(trained_bundles, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("oip-server")
    with running_server(trained_bundles.titanic, workdir) as running:
        wait_until_workers_loaded(running)
        yield running


@pytest.fixture
def client(server):
    connection = triton.InferenceServerClient(server.url.removeprefix("http://"))
    yield connection
    connection.close()


def _inputs(rows, binary=False):
    inputs = []
    for name in PASSENGERS[0]:
        if name in CATEGORICAL:
            values = np.array([row[name] for row in rows], dtype=np.object_)
            tensor = triton.InferInput(name, [len(rows)], "BYTES")
        else:
            values = np.array([row[name] for row in rows], dtype=np.float64)
            tensor = triton.InferInput(name, [len(rows)], "FP64")
        tensor.set_data_from_numpy(values, binary_data=binary)
        inputs.append(tensor)
    return inputs


def test_tritonclient_sees_a_live_ready_server_and_the_models_tensors(client, trained_bundles):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("titanic")
    assert client.is_model_ready("titanic", "1.0.0")
    assert not client.is_model_ready("crime")
    assert not client.is_model_ready("titanic", "9.9.9")
    assert client.get_server_metadata()["name"] == "batcomputer"
    metadata = client.get_model_metadata("titanic", "1.0.0")
    manifest = bundle.read_manifest(trained_bundles.titanic)
    assert [tensor["name"] for tensor in metadata["inputs"]] == [
        feature["name"] for feature in manifest["features"]
    ]
    datatypes = {tensor["name"]: tensor["datatype"] for tensor in metadata["inputs"]}
    assert datatypes == {
        feature["name"]: "BYTES" if feature["type"] == "categorical" else "FP64"
        for feature in manifest["features"]
    }
    assert [tensor["name"] for tensor in metadata["outputs"]] == manifest["flags"]


def test_tritonclient_infers_the_same_probabilities_as_the_friendly_api(client, server):
    outputs = [triton.InferRequestedOutput(flag, binary_data=False) for flag in ("survived",)]
    result = client.infer(
        "titanic", _inputs(PASSENGERS), model_version="1.0.0", outputs=outputs, request_id="7"
    )
    survived = result.as_numpy("survived")
    friendly = httpx.post(server.url + "/api/predict", json=PASSENGERS).json()
    assert survived.dtype == np.float64
    assert survived.tolist() == [row["survived"] for row in friendly]
    assert result.get_response()["id"] == "7"
    # Without requested outputs the client asks for binary outputs; JSON ones still read.
    everything = client.infer("titanic", _inputs(PASSENGERS))
    assert everything.as_numpy("died").tolist() == [row["died"] for row in friendly]


def test_tritonclient_gets_the_servers_named_errors(client):
    rows = [dict(PASSENGERS[0], embarked="Atlantis")]
    with pytest.raises(InferenceServerException) as refused:
        client.infer("titanic", _inputs(rows))
    assert "'embarked' must be one of its allowed values" in str(refused.value)
    with pytest.raises(InferenceServerException) as wrong_model:
        client.infer("crime", _inputs(PASSENGERS))
    assert "no model 'crime' here; this server serves 'titanic'" in str(wrong_model.value)
    with pytest.raises(InferenceServerException) as binary:
        client.infer("titanic", _inputs(PASSENGERS, binary=True))
    assert "binary_data=False" in str(binary.value)


def test_curl_style_json_request_and_hostile_bodies(server):
    url = server.url + "/v2/models/titanic/infer"
    request = {
        "inputs": [
            {
                "name": name,
                "shape": [1, 1],
                "datatype": "BYTES" if name in CATEGORICAL else "FP64",
                "data": [[value]],
            }
            for name, value in PASSENGERS[1].items()
        ]
    }
    answer = httpx.post(url, json=request)
    assert answer.status_code == 200
    assert [output["name"] for output in answer.json()["outputs"]] == ["died", "survived"]
    for hostile in (b"[" * 5000, b'{"inputs": "' + b"x" * 100_000 + b'"}', b"\x00\xff"):
        refused = httpx.post(url, content=hostile, headers={"Content-Type": "application/json"})
        assert refused.status_code == 400
        assert refused.json()["error"]
    assert httpx.get(server.url + "/healthz").status_code == 200


def _shifted(rng, rows):
    """First-class women in their sixties and seventies, embarked at Cherbourg."""
    return [
        {
            "pclass": "1st",
            "sex": "female",
            "age": float(rng.uniform(60, 80)),
            "sibsp": 0,
            "parch": 0,
            "fare": float(rng.uniform(80, 200)),
            "embarked": "Cherbourg",
        }
        for _ in range(rows)
    ]


def _like_training(rng, rows, manifest):
    """Rows drawn from the bundle's own reference distributions: labels by their shares,
    numbers inside a bin picked by its share."""
    columns = {}
    for name, entry in manifest["reference_distributions"]["inputs"].items():
        shares = np.array(
            list(entry["frequencies"].values() if name in CATEGORICAL else entry["frequencies"])
        )
        picks = rng.choice(len(shares), rows, p=shares / shares.sum())
        if name in CATEGORICAL:
            labels = list(entry["frequencies"])
            columns[name] = [labels[i] for i in picks]
        else:
            edges = entry["edges"]
            if name in ("sibsp", "parch"):  # counts: each bin's lowest value lies in it
                columns[name] = [int(edges[i]) for i in picks]
            else:
                columns[name] = [rng.uniform(edges[i], edges[i + 1]) for i in picks]
    return [{name: columns[name][i] for name in PASSENGERS[0]} for i in range(rows)]


def _psi(metrics_text: str) -> dict[str, float]:
    scores = {}
    for line in metrics_text.splitlines():
        if line.startswith("batcomputer_input_drift_psi{"):
            labels, value = line.rsplit(" ", 1)
            scores[labels.split('input="')[1].split('"')[0]] = float(value)
    return scores


def _send(server, rows):
    # New connections each time, so both workers' windows see the population.
    # Batches of 16: the most rows a request contributes to the drift windows.
    for start in range(0, len(rows), 16):
        response = httpx.post(server.url + "/api/predict", json=rows[start : start + 16])
        assert response.status_code == 200, response.text


def test_drift_moves_when_callers_send_a_shifted_population(trained_bundles, tmp_path):
    rng = np.random.default_rng(11)
    with running_server(trained_bundles.titanic, tmp_path) as server:
        wait_until_workers_loaded(server)
        manifest = bundle.read_manifest(trained_bundles.titanic)
        _send(server, _like_training(rng, 2400, manifest))
        stable = _psi(httpx.get(server.url + "/metrics").text)
        assert set(stable) == set(PASSENGERS[0])
        assert all(score < 0.1 for score in stable.values()), stable

        _send(server, _shifted(rng, 2400))
        shifted = _psi(httpx.get(server.url + "/metrics").text)
        assert shifted["pclass"] > 0.25
        assert shifted["sex"] > 0.25
        assert shifted["age"] > 0.25
        info = httpx.get(server.url + "/api/info").json()["drift"]["inputs"]
        assert info["embarked"]["assessment"] == "significant"

        outside = dict(PASSENGERS[0], fare=900.0, embarked="Atlantis")
        assert httpx.post(server.url + "/api/predict", json=outside).status_code == 400
        text = httpx.get(server.url + "/metrics").text
        assert 'batcomputer_input_unseen_category_total{input="embarked"} 1.0' in text
        assert 'batcomputer_input_out_of_range_total{input="fare"} 1.0' in text
