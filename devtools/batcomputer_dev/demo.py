"""The end-to-end demo: what a new team does on day one, run as one command.

Every step uses the same public commands a user would type (batcomputer-train,
batcomputer-publish, helm, kubectl), so the demo also proves those work together.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from batcomputer_dev import azurite, cluster_config, helm_tool

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "batcomputer-operator"
MODEL_VERSION = "1.0.0"
CONTAINER = "models"
CREDENTIALS_SECRET = "blob-reader"

# One example row per model: the same shape a caller sends to /api/predict.
EXAMPLE_INPUTS = {
    "titanic": {
        "pclass": "1st",
        "sex": "female",
        "age": 29,
        "sibsp": 0,
        "parch": 0,
        "fare": 80.0,
        "embarked": "Southampton",
    },
    "crime": {"crime": "Burglary", "district": "Leeds", "year": 2018},
}


class DemoError(RuntimeError):
    """A step failed; the message says which and what to look at."""


@dataclass(frozen=True)
class DemoSettings:
    work_dir: Path
    kubeconfig: Path
    blob_host: str
    blob_port: int
    models_namespace: str = "models"
    operator_namespace: str = "batcomputer-system"
    release: str = "batcomputer"
    helm_values: tuple[str, ...] = ()

    @property
    def container_uri(self) -> str:
        return f"http://{self.blob_host}:{self.blob_port}/{azurite.ACCOUNT}/{CONTAINER}"


def _step(message: str) -> None:
    print(f"\n==> {message}", flush=True)


def _bin(name: str) -> str:
    sibling = Path(sys.executable).parent / name
    return str(sibling) if sibling.exists() else name


def _run(
    command: Sequence[str], settings: DemoSettings, *, capture: bool = False, env_extra=None
) -> str:
    env = {**os.environ, "KUBECONFIG": str(settings.kubeconfig), **(env_extra or {})}
    result = subprocess.run(
        list(command),
        env=env,
        text=True,
        stdout=subprocess.PIPE if capture else None,
        check=False,
    )
    if result.returncode != 0:
        raise DemoError(f"`{' '.join(command)}` failed with exit code {result.returncode}")
    return result.stdout or ""


def _kubectl(settings: DemoSettings, *args: str, capture: bool = False) -> str:
    return _run([_kubectl_binary(), *args], settings, capture=capture)


@functools.cache
def _kubectl_binary() -> str:
    local = cluster_config.cache_root()
    built = sorted(local.glob("k8s/*/bin/kubectl"))
    return str(built[-1]) if built else (shutil.which("kubectl") or str(helm_tool.kubectl_binary()))


def _apply_generated(settings: DemoSettings, *create_args: str) -> None:
    """`kubectl create ...` as an idempotent apply, so a second demo run changes nothing."""
    document = _kubectl(settings, *create_args, "--dry-run=client", "-o", "yaml", capture=True)
    path = settings.work_dir / "generated.yaml"
    # The Secret's connection string passes through this file: keep it private.
    path.touch(mode=0o600)
    path.write_text(document)
    try:
        _kubectl(settings, "apply", "-f", str(path))
    finally:
        path.unlink()


def _train_and_publish(settings: DemoSettings, model: str, connection_string: str) -> str:
    bundles = settings.work_dir / "bundles"
    bundle_dir = bundles / model / MODEL_VERSION
    if not (bundle_dir / "bundle.json").exists():
        _run(
            [_bin("batcomputer-train"), model, "--version", MODEL_VERSION, "--out", str(bundles)],
            settings,
        )
    manifest = _run(
        [
            _bin("batcomputer-publish"),
            *(str(bundle_dir), "--to", settings.container_uri, "--force"),
            *("--credentials-secret", CREDENTIALS_SECRET),
        ],
        settings,
        capture=True,
        env_extra={"AZURE_STORAGE_CONNECTION_STRING": connection_string},
    )
    manifest_path = settings.work_dir / f"batmodel-{model}.yaml"
    manifest_path.write_text(manifest)
    return str(manifest_path)


def _network_policy_values(settings: DemoSettings) -> tuple[str, ...]:
    """Narrow the chart's NetworkPolicies to the local cluster: Azurite and the API server
    both listen on the host's bridge address."""
    return (
        f"networkPolicy.blobStorage.cidrs={{{settings.blob_host}/32}}",
        f"networkPolicy.blobStorage.ports={{{settings.blob_port}}}",
        f"networkPolicy.apiServer.cidrs={{{cluster_config.BRIDGE_IP}/32}}",
        f"networkPolicy.apiServer.ports={{{cluster_config.API_PORT}}}",
    )


def _install_operator(settings: DemoSettings) -> None:
    helm = str(helm_tool.helm_binary())
    _run(
        [
            helm,
            "upgrade",
            "--install",
            settings.release,
            str(CHART),
            "--namespace",
            settings.operator_namespace,
            "--create-namespace",
            # Only the demo's namespace: the test suite runs operators of its own in others.
            "--set",
            f"watchNamespaces={{{settings.models_namespace}}}",
            # The BatModels batcomputer-publish prints are pinned by their bundle digest:
            # the operator refuses any that is not.
            *("--set", "requirePinnedBundles=true"),
            *(flag for value in _network_policy_values(settings) for flag in ("--set", value)),
            *(flag for value in settings.helm_values for flag in ("--set", value)),
            "--wait",
            "--timeout",
            "5m",
        ],
        settings,
        env_extra={
            "HELM_CACHE_HOME": str(settings.work_dir / "helm" / "cache"),
            "HELM_CONFIG_HOME": str(settings.work_dir / "helm" / "config"),
            "HELM_DATA_HOME": str(settings.work_dir / "helm" / "data"),
        },
    )


def _condition(batmodel: dict, kind: str) -> dict:
    conditions = (batmodel.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == kind), {})


def _wait_ready(settings: DemoSettings, model: str, timeout: float = 300) -> None:
    """Wait for Ready, but stop at once with the operator's reason when the model is Stalled."""
    deadline = time.monotonic() + timeout
    last_reason = None
    while True:
        batmodel = json.loads(
            _kubectl(
                settings,
                "get",
                "bm",
                model,
                "-n",
                settings.models_namespace,
                "-o",
                "json",
                capture=True,
            )
        )
        current = (batmodel.get("status") or {}).get("observedGeneration") == batmodel["metadata"][
            "generation"
        ]
        ready, stalled = _condition(batmodel, "Ready"), _condition(batmodel, "Stalled")
        if current and ready.get("status") == "True":
            print(f"{model}: Ready ({ready.get('message', '')})", flush=True)
            print(f"{model}: {_condition(batmodel, 'Pinned').get('message')}", flush=True)
            return
        if current and stalled.get("status") == "True":
            raise DemoError(
                f"{model} is Stalled: {stalled.get('reason')}: {stalled.get('message')} "
                f"(see kubectl describe bm {model} -n {settings.models_namespace})"
            )
        if time.monotonic() > deadline:
            raise DemoError(f"{model} not Ready after {timeout:.0f} s: {ready.get('message')}")
        if ready.get("reason") != last_reason:
            last_reason = ready.get("reason")
            print(f"{model}: {last_reason or 'waiting for the operator'}", flush=True)
        time.sleep(2)


def _predict(settings: DemoSettings, model: str) -> dict:
    cluster_ip = _kubectl(
        settings,
        "get",
        "service",
        model,
        "-n",
        settings.models_namespace,
        "-o",
        "jsonpath={.spec.clusterIP}",
        capture=True,
    ).strip()
    request = urllib.request.Request(
        f"http://{cluster_ip}/api/predict",
        data=json.dumps(EXAMPLE_INPUTS[model]).encode(),
        headers={"Content-Type": "application/json"},
    )
    url = f"http://{cluster_ip}"
    # kube-proxy follows a new Service's endpoints within about a second of Ready.
    for attempt in itertools.count(1):
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return {"url": url, "result": json.load(response)}
        except urllib.error.URLError as error:
            if not isinstance(error.reason, ConnectionRefusedError) or attempt == 10:
                raise DemoError(f"POST {url}/api/predict failed: {error.reason}") from None
            time.sleep(1)


def run_demo(settings: DemoSettings) -> None:
    started = time.monotonic()
    settings.work_dir.mkdir(parents=True, exist_ok=True)

    _step(f"Azurite (Azure Blob Storage emulator) on {settings.blob_host}:{settings.blob_port}")
    connection_string = azurite.ensure_running(
        host=settings.blob_host, port=settings.blob_port, location=settings.work_dir / "azurite"
    )

    manifests = []
    for model in ("titanic", "crime"):
        _step(f"Training and publishing the {model} model, version {MODEL_VERSION}")
        manifests.append(_train_and_publish(settings, model, connection_string))

    namespace = settings.models_namespace
    _step(f"Namespace {namespace} and the Secret its model pods read the blobs with")
    _apply_generated(settings, "create", "namespace", namespace)
    # Enforced by the API server from Kubernetes 1.23 on; the model pods meet the profile.
    _kubectl(
        settings,
        *("label", "namespace", namespace, "--overwrite"),
        "pod-security.kubernetes.io/enforce=restricted",
    )
    _apply_generated(
        settings,
        *("create", "secret", "generic", CREDENTIALS_SECRET, "-n", namespace),
        f"--from-literal=connectionString={connection_string}",
    )

    _step("Installing the operator with Helm")
    _install_operator(settings)

    _step(f"Applying the BatModels in namespace {namespace}")
    for manifest in manifests:
        _kubectl(settings, "apply", "-n", namespace, "-f", manifest)

    _step("Waiting for both models to be Ready")
    for model in ("titanic", "crime"):
        _wait_ready(settings, model)
    _kubectl(settings, "get", "bm", "-n", namespace)

    for model in ("titanic", "crime"):
        _step(f"A real prediction from {model}, through its Service")
        answer = _predict(settings, model)
        print(f"POST {answer['url']}/api/predict {json.dumps(EXAMPLE_INPUTS[model])}")
        for flag, probability in answer["result"].items():
            print(f"  {flag:<28} {probability:6.1%} {'#' * round(probability * 40)}")
        print(f"  Swagger UI: {answer['url']}/api/docs   batclient page: {answer['url']}/")

    print(
        f"\nDone in {time.monotonic() - started:.0f} s. "
        f"Try: export KUBECONFIG={settings.kubeconfig}; kubectl get bm -n {namespace}; "
        f"kubectl describe bm titanic -n {namespace}"
    )
