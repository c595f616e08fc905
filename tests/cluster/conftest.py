"""Fixtures of the operator's cluster tests: a namespace of their own with the blob
credentials Secret, the operator watching it, and load through a model's Service."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from _operator_support import SECRET, load_through_service, model_namespace, running_operator


@pytest.fixture(scope="module")
def namespace(kube_cluster, pod_azurite) -> Iterator[str]:
    with model_namespace(kube_cluster, pod_azurite, SECRET) as name:
        yield name


@pytest.fixture(scope="module")
def operator(kube_cluster, server_image, namespace, tmp_path_factory) -> Iterator[None]:
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    with running_operator(kube_cluster, namespace, log, "--server-image", server_image):
        yield


@pytest.fixture
def load():
    """Start `load_through_service(cluster, name, namespace[, passenger])`; each stops
    when the test ends."""
    with contextlib.ExitStack() as stack:
        yield lambda *where: stack.enter_context(load_through_service(*where))
