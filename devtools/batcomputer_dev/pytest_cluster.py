"""pytest plugin: a Kubernetes cluster and the project's images for the test session.

Fixtures (session-scoped):

- ``kube_cluster``: by default the embedded local cluster (`batcomputer-cluster`),
  brought up when it is not running and reused when it is. Needs root.
  ``BATCOMPUTER_USE_EXISTING_CLUSTER=1`` uses the cluster ``KUBECONFIG`` points at
  (kind, k3d, minikube, a cloud cluster) as it is, with ``kubectl`` from PATH;
  the variables that needs are checked once, before any test runs
  (``existing_cluster_problems``).
  At the end of the session the local cluster is stopped, and the host checked
  for anything it left behind, when this session started it or
  ``BATCOMPUTER_TEST_TEARDOWN=1`` (see ``cluster_teardown``).
  ``BATCOMPUTER_USE_KIND=1`` creates a kind cluster through pytest-kind, which
  downloads kind and needs a Docker engine and internet access (not available
  on the project's own build machines).
- ``server_image`` / ``operator_image``: image names usable by pods. Locally they
  are built with buildah (layer cache) and imported into the cluster's containerd;
  on an existing cluster they come from ``BATCOMPUTER_SERVER_IMAGE`` /
  ``BATCOMPUTER_OPERATOR_IMAGE`` (a registry that cluster pulls from); with kind
  they are built with ``docker build`` and loaded into the kind node.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from batcomputer_dev import cluster_config as cfg
from batcomputer_dev import images
from batcomputer_dev.cluster import LocalCluster
from batcomputer_dev.cluster_teardown import down_and_verify, teardown_wanted
from batcomputer_dev.k8s_build import ensure_binaries

USE_EXISTING = "BATCOMPUTER_USE_EXISTING_CLUSTER"
USE_KIND = "BATCOMPUTER_USE_KIND"
IMAGE_VARIABLES = {"server": "BATCOMPUTER_SERVER_IMAGE", "operator": "BATCOMPUTER_OPERATOR_IMAGE"}
HOST_IP = "BATCOMPUTER_HOST_IP"


@dataclass
class KubeCluster:
    """What tests need from a cluster, wherever it comes from."""

    kind: str  # "local", "existing" or "kind"
    kubeconfig: Path
    kubectl_binary: str
    # The address pods can use to reach services on the test host (e.g. Azurite);
    # None when the cluster's network is not known (existing clusters).
    host_ip: str | None
    # True when this test session brought the cluster up, so tearing it down
    # cannot disturb anybody else using it.
    started_by_this_session: bool = False
    _kind_cluster: object = field(default=None, repr=False)

    @property
    def local(self) -> bool:
        return self.kind == "local"

    def kubectl(self, *args: str, input_text: str | None = None, check: bool = True) -> str:
        result = subprocess.run(
            [self.kubectl_binary, f"--kubeconfig={self.kubeconfig}", *args],
            input=input_text,
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}"
            )
        return result.stdout


def pytest_collection_finish(session: pytest.Session) -> None:
    """Do the long cold builds before any test starts, outside per-test timeouts.

    On a fresh machine the Kubernetes binaries take minutes to build and the
    images a few more; inside a fixture that time would count against the first
    test's timeout. Only what the selected tests use is built. On an existing
    cluster nothing is built; instead a missing variable ends the run here, with
    one message, rather than as an error in every test that needs it.
    """
    used = {name for item in session.items for name in getattr(item, "fixturenames", ())}
    if os.environ.get(USE_KIND) == "1":
        return
    if os.environ.get(USE_EXISTING) == "1":
        problems = existing_cluster_problems(os.environ, used, shutil.which("kubectl"))
        if problems:
            pytest.exit(
                f"{USE_EXISTING}=1 needs:\n  " + "\n  ".join(problems),
                returncode=pytest.ExitCode.USAGE_ERROR,
            )
        return
    kinds = [kind for kind in images.IMAGES if f"{kind}_image" in used]
    if "kube_cluster" not in used and not kinds:
        return
    # Build progress goes straight to the terminal: minutes of silence look like a hang.
    capture = session.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        ensure_binaries()
        if kinds:
            images.build_images(kinds)


def existing_cluster_problems(
    environ: Mapping[str, str], used_fixtures: Collection[str], kubectl: str | None
) -> list[str]:
    """What the selected tests need on an existing cluster and the environment lacks."""
    problems = []
    if "kube_cluster" in used_fixtures:
        if not environ.get("KUBECONFIG"):
            problems.append("KUBECONFIG: the kubeconfig of the cluster to test against")
        if kubectl is None:
            problems.append("kubectl on PATH")
    for kind, variable in IMAGE_VARIABLES.items():
        if f"{kind}_image" in used_fixtures and not environ.get(variable):
            problems.append(f"{variable}: the {kind} image, in a registry the cluster pulls from")
    if "pod_azurite" in used_fixtures and not environ.get(HOST_IP):
        problems.append(
            f"{HOST_IP}: an address of this machine that pods can reach "
            "(the tests start Azurite for the pods on it)"
        )
    return problems


@pytest.fixture(scope="session")
def kube_cluster() -> Iterator[KubeCluster]:
    if os.environ.get(USE_KIND) == "1":
        yield from _kind_cluster()
    elif os.environ.get(USE_EXISTING) == "1":
        yield _existing_cluster()
    else:
        cluster = _local_cluster()
        yield cluster
        if teardown_wanted(cluster.kind, cluster.started_by_this_session, os.environ):
            _tear_down_local_cluster()


def _tear_down_local_cluster() -> None:
    """`batcomputer-cluster down` at the session's end; any change it leaves fails the run."""
    changes = down_and_verify(LocalCluster())
    if changes:
        pytest.fail(
            "batcomputer-cluster down left the host changed:\n  " + "\n  ".join(changes),
            pytrace=False,
        )


def _local_cluster() -> KubeCluster:
    local = LocalCluster()
    was_up = local.healthy()
    local.up()
    return KubeCluster(
        kind="local",
        kubeconfig=local.paths.kubeconfig,
        kubectl_binary=str(ensure_binaries() / "kubectl"),
        host_ip=cfg.BRIDGE_IP,
        started_by_this_session=not was_up,
    )


def _existing_cluster() -> KubeCluster:
    kubeconfig = os.environ.get("KUBECONFIG")
    if not kubeconfig:
        pytest.fail(f"{USE_EXISTING}=1 needs KUBECONFIG to point at the cluster to use")
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail(f"{USE_EXISTING}=1 needs kubectl on PATH")
    return KubeCluster("existing", Path(kubeconfig), kubectl, os.environ.get(HOST_IP))


def _kind_cluster() -> Iterator[KubeCluster]:
    try:
        from pytest_kind import KindCluster
    except ImportError:
        pytest.fail(f"{USE_KIND}=1 needs `pip install pytest-kind` (and Docker, internet)")
    kind = KindCluster("batcomputer")
    kind.create()
    try:
        yield KubeCluster(
            "kind",
            Path(kind.kubeconfig_path),
            str(kind.kubectl_path),
            host_ip=None,
            started_by_this_session=True,
            _kind_cluster=kind,
        )
    finally:
        kind.delete()


def _image(cluster: KubeCluster, kind: str) -> str:
    spec = images.IMAGES[kind]
    if cluster.kind == "existing":
        name = os.environ.get(IMAGE_VARIABLES[kind])
        if not name:
            pytest.fail(f"{USE_EXISTING}=1 needs {IMAGE_VARIABLES[kind]} (an image it can pull)")
        return name
    if cluster.kind == "kind":
        subprocess.run(
            ["docker", "build", "-f", spec.dockerfile, "-t", spec.name, images.REPO_ROOT],
            check=True,
        )
        cluster._kind_cluster.load_docker_image(spec.name)
        return spec.name
    images.build_images([kind])
    images.import_into_cluster(spec.name, LocalCluster().paths)
    return spec.name


@pytest.fixture(scope="session")
def server_image(kube_cluster: KubeCluster) -> str:
    return _image(kube_cluster, "server")


@pytest.fixture(scope="session")
def operator_image(kube_cluster: KubeCluster) -> str:
    return _image(kube_cluster, "operator")
