"""The real server (gunicorn, 2 workers) never runs a hostile bundle's pickles.

An attacker who can write the blob container rewrites a real trained bundle and makes
its manifest consistent again (digests and ``model_types`` recomputed). The server must
stay unready with a reason naming the refused global, and no gadget may run in any
worker: each would create a marker file.
"""

import copyreg
import os
import pickle
import shutil

import httpx
import pytest
import scipy.stats._continuous_distns
from _server_process import PASSENGER, running_server, wait_until_workers_loaded

from batcomputer_bundle import bundle, safe_pickle


class _ScipyExec:
    """copyreg._reconstructor + BUILD onto a SciPy distribution, whose __setstate__ exec()s."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        template = f"import os\nos.system('touch {self.marker}')\n"
        state = {"_parse_arg_template": template, "shapes": None, "numargs": 0}
        distribution = scipy.stats._continuous_distns.norm_gen
        return copyreg._reconstructor, (distribution, object, None), state


class _System:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _forge(folder, *, drop_onnx=False):
    """Make bundle.json consistent with whatever the attacker wrote (the model's types too)."""
    manifest = bundle.read_manifest(folder)
    if drop_onnx:
        (folder / bundle.ONNX_FILE).unlink(missing_ok=True)
        manifest["onnx"] = None
    names = [name for name in manifest["files"] if (folder / name).exists()]
    manifest["files"] = bundle.describe_files(folder, names)
    manifest["model_types"] = safe_pickle.global_names((folder / bundle.MODEL_FILE).read_bytes())
    bundle.write_manifest(folder, {k: v for k, v in manifest.items() if k != "format"})


@pytest.fixture
def copy(trained_bundles, tmp_path):
    return shutil.copytree(trained_bundles.titanic, tmp_path / "bundle")


def _hostile_lookup(folder, marker):
    lookup = pickle.loads((folder / bundle.LOOKUP_FILE).read_bytes())  # our own trained file
    lookup["age"]["note"] = _ScipyExec(marker)
    (folder / bundle.LOOKUP_FILE).write_bytes(pickle.dumps(lookup))
    return "lookup.pkl: refused to load copyreg._reconstructor"


def _hostile_flags(folder, marker):
    (folder / bundle.FLAGS_FILE).write_bytes(pickle.dumps(["died", _System(marker)]))
    return "flags.pkl: refused to load posix.system"


def _hostile_model(folder, marker):
    model = pickle.loads((folder / bundle.MODEL_FILE).read_bytes())  # our own trained file
    model.calibration_ = _ScipyExec(marker)
    (folder / bundle.MODEL_FILE).write_bytes(pickle.dumps(model, protocol=5))
    (folder / bundle.ONNX_FILE).unlink()
    return "model.pkl: refused to load scipy.stats._continuous_distns.norm_gen"


@pytest.mark.parametrize("attack", [_hostile_lookup, _hostile_flags, _hostile_model])
def test_a_hostile_bundle_is_never_ready_and_runs_nothing(copy, tmp_path, attack):
    marker = tmp_path / "pwned"
    expected = attack(copy, marker)
    _forge(copy, drop_onnx=not (copy / bundle.ONNX_FILE).exists())
    with running_server(copy, tmp_path / "run") as server:
        wait_until_workers_loaded(server)
        ready = httpx.get(server.url + "/readyz")
        assert ready.status_code == 503
        assert expected in ready.json()["error"]
        assert httpx.post(server.url + "/api/predict", json=PASSENGER).status_code == 503
        assert server.log_text().count("NOT READY") == 2  # both workers refused it
    assert not marker.exists()


def test_with_a_verified_model_onnx_a_hostile_model_pkl_is_never_unpickled(copy, tmp_path):
    marker = tmp_path / "pwned"
    (copy / bundle.MODEL_FILE).write_bytes(pickle.dumps(_System(marker)))
    _forge(copy)
    with running_server(copy, tmp_path / "run") as server:
        wait_until_workers_loaded(server)
        assert httpx.get(server.url + "/readyz").status_code == 200
        info = httpx.get(server.url + "/api/info").json()
        assert info["engine"] == "onnxruntime"
        assert "model.pkl was not unpickled" in info["engine_reason"]
        answer = httpx.post(server.url + "/api/predict", json=PASSENGER)
        assert answer.status_code == 200 and set(answer.json()) == {"died", "survived"}
    assert not marker.exists()


def test_without_model_onnx_the_real_model_loads_through_the_allow_list(copy, tmp_path):
    _forge(copy, drop_onnx=True)
    with running_server(copy, tmp_path / "run") as server:
        wait_until_workers_loaded(server)
        assert httpx.get(server.url + "/readyz").status_code == 200
        info = httpx.get(server.url + "/api/info").json()
        assert "model.pkl was not unpickled" not in info["engine_reason"]
        answer = httpx.post(server.url + "/api/predict", json=PASSENGER)
        assert answer.status_code == 200
        assert sum(answer.json().values()) == pytest.approx(1.0)
