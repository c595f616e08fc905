"""schemathesis against the running server's own generated spec: no 5xx, responses conform.

Every operation is driven with valid (positive) and invalid (negative) requests generated
from the document the server publishes; a bounded number of examples keeps it quick.
"""

import pytest
import schemathesis
from _server_process import running_server
from hypothesis import HealthCheck, given, settings

MAX_BATCH_ROWS = 8
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
            response = case.call_and_validate(base_url=server.url, timeout=30)
            assert response.status_code < 500, response.text

        honours()
