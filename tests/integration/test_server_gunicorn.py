"""The real ``batcomputer-server`` (gunicorn, 2 workers) on real trained bundles."""

import pickle
import re
import shutil
import socket

import httpx
import pytest
from _server_process import PASSENGER, running_server, wait_until_workers_loaded

from batcomputer_bundle import bundle


@pytest.fixture(scope="module")
def titanic_server(trained_bundles, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("titanic-server")
    with running_server(
        trained_bundles.titanic, workdir, "--root-path", "/models/titanic"
    ) as server:
        yield server


def _passenger(**changes):
    return {**PASSENGER, **changes}


def test_real_titanic_predictions_single_and_batch(titanic_server):
    url = titanic_server.url
    assert httpx.get(url + "/readyz").json() == {"status": "ready", "engine": "onnxruntime"}
    man = httpx.post(url + "/api/predict", json=_passenger()).json()
    woman = httpx.post(url + "/api/predict", json=_passenger(sex="female", pclass="1st")).json()
    assert set(man) == {"died", "survived"}
    assert man["died"] > 0.7 and woman["survived"] > 0.7
    batch = httpx.post(url + "/api/predict", json=[_passenger(), _passenger(sex="female")])
    assert batch.status_code == 200 and batch.json()[0] == pytest.approx(man)


def test_the_path_prefix_works_on_the_real_server(titanic_server):
    url = titanic_server.url + "/models/titanic"
    assert httpx.post(url + "/api/predict", json=_passenger()).status_code == 200
    assert httpx.get(url + "/openapi.json").json()["servers"] == [{"url": "/models/titanic"}]


def test_bad_input_over_real_http_is_a_named_400_never_a_5xx(titanic_server):
    url = titanic_server.url + "/api/predict"
    response = httpx.post(url, json=_passenger(embarked="Atlantis"))
    assert response.status_code == 400
    assert response.json()["field"] == "embarked"
    assert response.json()["allowed"] == ["Cherbourg", "Queenstown", "Southampton"]
    garbage = httpx.post(url, content=b"\x00{{", headers={"Content-Type": "application/json"})
    assert garbage.status_code == 400
    assert httpx.post(url, content=b"age=3").status_code == 415


def test_a_large_batch_is_answered_row_for_row_and_its_mistakes_named(titanic_server):
    url = titanic_server.url + "/api/predict"
    rows = [
        _passenger(age=1 + i % 79, sibsp=i % 8, sex=("male", "female")[i % 2]) for i in range(1000)
    ]
    batch = httpx.post(url, json=rows)
    assert batch.status_code == 200
    answers = batch.json()
    assert len(answers) == 1000
    for index in (0, 1, 537, 999):
        single = httpx.post(url, json=rows[index]).json()
        assert answers[index] == pytest.approx(single)
    rows[537] = _passenger(fare=True)
    refused = httpx.post(url, json=rows)
    assert refused.status_code == 400
    assert refused.json() == {
        "error": "row 537: 'fare' must be a number, got a boolean",
        "field": "fare",
        "allowed": {"minimum": 0.0, "maximum": 512.3292},
        "row": 537,
    }


def test_every_kind_of_answer_arrives_whole(titanic_server):
    """A file, a HEAD answer, a chunked empty body and an HTTP/1.0 answer, each with its head."""
    url = titanic_server.url
    asset = httpx.get(url + "/api/docs/assets/swagger-ui.css")
    assert asset.status_code == 200
    assert len(asset.content) == int(asset.headers["Content-Length"]) > 1000
    head = httpx.head(url + "/healthz")
    assert head.status_code == 200 and head.content == b""
    redirect = httpx.get(url + "/models/titanic")
    assert redirect.status_code == 308
    assert redirect.headers["Location"] == "/models/titanic/"
    with socket.create_connection(("127.0.0.1", titanic_server.port), timeout=5) as client:
        client.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        answer = b""
        while chunk := client.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.0 200 OK\r\n")
    assert answer.endswith(b"\r\n\r\n" + b'{"status":"alive"}')


def test_bodies_and_batches_over_the_limits_get_413(trained_bundles, tmp_path):
    limits = ("--max-body-bytes", "2000", "--max-batch-rows", "5")
    with running_server(trained_bundles.titanic, tmp_path, *limits) as server:
        url = server.url + "/api/predict"
        too_many = httpx.post(url, json=[_passenger()] * 6)
        assert too_many.status_code == 413 and too_many.json()["allowed"]["maximum"] == 5
        too_big = httpx.post(url, json=[_passenger(embarked="x" * 3000)])
        assert too_big.status_code == 413
        chunked = httpx.post(
            url,
            content=iter([b'{"age": ', b"1" * 3000, b"}"]),
            headers={"Content-Type": "application/json"},
        )
        assert chunked.status_code == 413


def test_metrics_add_up_across_both_workers(titanic_server):
    url = titanic_server.url
    before = _sample(httpx.get(url + "/metrics").text, "batcomputer_predicted_rows_total")
    with httpx.Client() as client:
        for _ in range(20):
            # A fresh connection each time, so both workers take some of them.
            client.post(url + "/api/predict", json=_passenger(), headers={"Connection": "close"})
        client.post(url + "/api/predict", json=[_passenger()] * 30)
    text = httpx.get(url + "/metrics").text
    assert _sample(text, "batcomputer_predicted_rows_total") - before == 50
    assert 'batcomputer_model_info{engine="onnxruntime",name="titanic",version="1.0.0"}' in text
    assert 'route="/api/predict",status="200"' in text
    assert re.search(r"batcomputer_http_request_duration_seconds_count\{.*\} \d+", text)


def _sample(text, name):
    match = re.search(rf"^{name} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_crime_predictions_name_the_outcome_flags(trained_bundles, tmp_path):
    with running_server(trained_bundles.crime, tmp_path) as server:
        params = httpx.get(server.url + "/api/predict/params").json()
        result = httpx.post(server.url + "/api/predict", json=params["example"]).json()
        assert list(result) == params["flags"]
        assert sum(result.values()) == pytest.approx(1.0, abs=1e-5)
        info = httpx.get(server.url + "/api/info").json()
        assert info["name"] == "crime" and info["status"] == "ready"


def test_writes_only_under_tmpdir(titanic_server):
    assert list(titanic_server.home.iterdir()) == []
    assert list(titanic_server.tmpdir.glob("batcomputer-metrics-*/*.db"))


def _copy(folder, tmp_path):
    return shutil.copytree(folder, tmp_path / "bundle")


@pytest.mark.parametrize("problem", ["tampered", "inconsistent", "hostile"])
def test_a_bad_bundle_leaves_the_server_alive_but_unready(trained_bundles, tmp_path, problem):
    folder = _copy(trained_bundles.titanic, tmp_path)
    if problem == "tampered":
        (folder / "flags.pkl").write_bytes(pickle.dumps(["lived", "died"]))
        expected = "sha256 mismatch for flags.pkl"
    else:
        if problem == "inconsistent":
            lookup = pickle.loads((folder / "lookup.pkl").read_bytes())
            lookup.pop("fare")
            (folder / "lookup.pkl").write_bytes(pickle.dumps(lookup))
            expected = "describes 6 features but the model takes 7"
        else:
            (folder / "flags.pkl").write_bytes(pickle.dumps(shutil.rmtree))
            expected = "refused to load shutil.rmtree"
        manifest = bundle.read_manifest(folder)
        manifest["files"] = bundle.describe_files(folder, list(manifest["files"]))
        bundle.write_manifest(folder, {k: v for k, v in manifest.items() if k != "format"})
    with running_server(folder, tmp_path / "run") as server:
        wait_until_workers_loaded(server)
        assert httpx.get(server.url + "/healthz").status_code == 200
        ready = httpx.get(server.url + "/readyz")
        assert ready.status_code == 503 and expected in ready.json()["error"]
        assert httpx.post(server.url + "/api/predict", json=_passenger()).status_code == 503
        assert "NOT READY" in server.log_text() and expected in server.log_text()
    assert folder.exists()
