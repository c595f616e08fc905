"""e2e fixtures: the operator installed with Helm, models published to the pod-reachable Azurite.

The operator is installed namespaced (it watches only this session's model
namespace), so it never touches what another user of a shared cluster runs.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest
from _e2e_support import CHART, CREDENTIALS_SECRET, image_values

from batcomputer_dev.kube_testing import publish
from batcomputer_dev.pytest_bundles import train_bundle


@dataclass(frozen=True)
class OperatorRelease:
    name: str
    namespace: str
    models_namespace: str
    service_account: str
    install_output: str

    @property
    def subject(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"


@pytest.fixture(scope="session")
def published_models(pod_azurite, trained_bundles, tmp_path_factory) -> dict[str, dict]:
    """BatModels `batcomputer-publish` printed, by "<model>-<version>": titanic 1.0.0 and
    1.0.1 (a PATCH release, retrained) and crime 1.0.0."""
    container = pod_azurite.make_container("e2e-models")
    retrained = train_bundle("titanic", "1.0.1", tmp_path_factory.mktemp("retrained"))
    bundles = [trained_bundles.titanic, trained_bundles.crime, retrained]
    published = [publish(pod_azurite, container, bundle) for bundle in bundles]
    return {f"{doc['metadata']['name']}-{doc['spec']['version']}": doc for doc in published}


@pytest.fixture(scope="session")
def operator_release(
    helm, kube_cluster, operator_image, server_image, pod_azurite
) -> Iterator[OperatorRelease]:
    """The chart installed with `helm install --wait`, watching one fresh namespace."""
    suffix = secrets.token_hex(3)
    release = OperatorRelease(
        name=f"bc-e2e-{suffix}",
        namespace=f"bc-e2e-system-{suffix}",
        models_namespace=f"bc-e2e-models-{suffix}",
        service_account=f"bc-e2e-{suffix}-batcomputer-operator",
        install_output="",
    )
    kube_cluster.kubectl("create", "namespace", release.models_namespace)
    kube_cluster.kubectl(
        *("create", "secret", "generic", CREDENTIALS_SECRET, "-n", release.models_namespace),
        f"--from-literal=connectionString={pod_azurite.connection_string}",
    )
    try:
        installed = helm(
            *("install", release.name, CHART, "--namespace", release.namespace),
            "--create-namespace",
            *image_values(operator_image, server_image),
            *("--set-json", f'watchNamespaces=["{release.models_namespace}"]'),
            *("--wait", "--timeout", "5m"),
            kubeconfig=kube_cluster.kubeconfig,
        )
        yield replace(release, install_output=installed.stdout)
    finally:
        helm(
            *("uninstall", release.name, "--namespace", release.namespace, "--wait"),
            kubeconfig=kube_cluster.kubeconfig,
            check=False,
        )
        kube_cluster.kubectl(
            *("delete", "namespace", release.models_namespace, release.namespace),
            *("--ignore-not-found", "--wait=false"),
            check=False,
        )
