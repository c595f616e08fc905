"""schemathesis against the running server's own generated spec: no 5xx, responses conform.

Every operation is driven with valid (positive) and invalid (negative) requests generated
from the document the server publishes; a bounded number of examples keeps it quick.
The schemathesis command line runs every check it has (``--checks all``, wrong methods,
headers and conformance included) and finds nothing but the deviations the README lists.
"""

import subprocess
import sys
from pathlib import Path

import pytest
import schemathesis
from _server_process import running_server
from hypothesis import HealthCheck, given, settings

MAX_BATCH_ROWS = 8
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
# The README's deliberate deviation: a batch over --max-batch-rows (the document's
# maxItems) is refused with 413 Content Too Large, the status for "too much", not 400.
CONFIG = """
[checks.negative_data_rejection]
expected-statuses = [
    "400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"
]
"""
EXAMPLES = {schemathesis.GenerationMode.POSITIVE: 40, schemathesis.GenerationMode.NEGATIVE: 30}


@pytest.fixture(scope="module", params=["titanic", "crime"])
def server(request, trained_bundles, tmp_path_factory):
    workdir = tmp_path_factory.mktemp(f"schemathesis-{request.param}")
    limits = ("--max-batch-rows", str(MAX_BATCH_ROWS))
    with running_server(trained_bundles[request.param], workdir, *limits) as running:
        yield running


def _operations(server):
    api = schemathesis.openapi.from_url(server.url + "/openapi.json")
    return [result.ok() for result in api.get_all_operations()]


def _is_documented_batch_limit(response) -> bool:
    """The README's deviation, and only it: 413 naming the batch limit's bounds."""
    return response.status_code == 413 and response.json().get("allowed") == {
        "minimum": 1,
        "maximum": MAX_BATCH_ROWS,
    }


@pytest.mark.parametrize("mode", list(EXAMPLES), ids=lambda mode: mode.value)
def test_the_server_honours_its_own_openapi_document(server, mode):
    operations = _operations(server)
    assert {op.path for op in operations} >= {"/api/predict", "/api/info", "/readyz"}
    for operation in operations:
        if mode is schemathesis.GenerationMode.NEGATIVE and operation.method != "post":
            continue  # the GET endpoints take no parameters, so nothing can be invalid

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES[mode],
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def honours(case):
            response = case.call(base_url=server.url, timeout=30)
            assert response.status_code < 500, response.text
            if not _is_documented_batch_limit(response):
                case.validate_response(response)

        honours()


def test_schemathesis_with_all_checks_finds_only_the_documented_deviations(server, tmp_path):
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    result = subprocess.run(
        [
            *(SCHEMATHESIS, "--config-file", config, "--no-color", "run"),
            *(server.url + "/openapi.json", "--checks", "all", "--max-examples", "20"),
            *("--generation-deterministic", "--request-timeout", "10"),
        ],
        check=False,
        cwd=tmp_path,  # where it keeps what it found
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
