"""Every Kubernetes API call the operator makes, on plain JSON dicts.

Objects travel as the API server's own JSON (camelCase dicts), so the pure
builders' output can be compared with live objects field by field and sent
unchanged as server-side apply bodies.
"""

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import kubernetes
import urllib3

FIELD_MANAGER = "batcomputer-operator"
_TIMEOUT = (5, 30)
_PATHS = {
    "Deployment": "/apis/apps/v1/namespaces/{namespace}/deployments",
    "Service": "/api/v1/namespaces/{namespace}/services",
    "Ingress": "/apis/networking.k8s.io/v1/namespaces/{namespace}/ingresses",
    "Pod": "/api/v1/namespaces/{namespace}/pods",
    # core v1 Endpoints, not EndpointSlices: discovery.k8s.io/v1 is absent on 1.20.
    "Endpoints": "/api/v1/namespaces/{namespace}/endpoints",
    "BatModel": "/apis/batcomputer.io/v1alpha1/namespaces/{namespace}/batmodels",
}


_LASTING_REFUSALS = {400: "BadRequest", 403: "Forbidden", 422: "Invalid"}


class KubeError(RuntimeError):
    """The API server refused a request; the message carries its own reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status

    @property
    def lasting_reason(self) -> str | None:
        """A reason when retrying the same request cannot help (bad object, no permission)."""
        return _LASTING_REFUSALS.get(self.status)


class Kube:
    """A connection to one API server."""

    def __init__(self, api_client: Any) -> None:
        self._client = api_client

    def _request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> dict | None:
        """The decoded response, or None for 404 (absent is a normal answer here)."""
        headers = {"Accept": "application/json", "Content-Type": content_type}
        request = self._client.param_serialize(
            method,
            path,
            query_params=list((query or {}).items()),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self._client.call_api(*request, _request_timeout=_TIMEOUT)
            data = response.read()
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise KubeError(0, f"API server unreachable: {error}") from error
        if response.status == 404:
            return None
        decoded = json.loads(data) if data else {}
        if not 200 <= response.status < 300:
            raise KubeError(response.status, decoded.get("message", str(data[:200])))
        return decoded

    @staticmethod
    def _path(kind: str, namespace: str, name: str | None = None) -> str:
        path = _PATHS[kind].format(namespace=quote(namespace, safe=""))
        return f"{path}/{quote(name, safe='')}" if name else path

    def get(self, kind: str, namespace: str, name: str) -> dict | None:
        return self._request("GET", self._path(kind, namespace, name))

    def list(self, kind: str, namespace: str, labels: Mapping[str, str]) -> list[dict]:
        selector = ",".join(f"{key}={value}" for key, value in labels.items())
        found = self._request("GET", self._path(kind, namespace), query={"labelSelector": selector})
        found = found or {}
        # List items come without apiVersion and kind; put them back so items compare
        # with manifests like objects read one by one.
        return [
            {"apiVersion": found.get("apiVersion"), "kind": kind, **item}
            for item in found.get("items") or []
        ]

    def apply(self, manifest: Mapping[str, Any]) -> dict:
        """Server-side apply, taking back fields someone else changed by hand."""
        metadata = manifest["metadata"]
        applied = self._request(
            "PATCH",
            self._path(manifest["kind"], metadata["namespace"], metadata["name"]),
            query={"fieldManager": FIELD_MANAGER, "force": "true"},
            body=manifest,
            content_type="application/apply-patch+yaml",
        )
        if applied is None:
            raise KubeError(404, f"{manifest['kind']} namespace {metadata['namespace']} is gone")
        return applied

    def delete(self, kind: str, namespace: str, name: str) -> None:
        self._request(
            "DELETE",
            self._path(kind, namespace, name),
            body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"},
        )

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self._request(
            "PATCH",
            self._path("BatModel", namespace, name) + "/status",
            body={"status": dict(status)},
            content_type="application/merge-patch+json",
        )


def connect() -> Kube:
    """In-cluster credentials when running in a pod, else the kubeconfig (KUBECONFIG)."""
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(client_configuration=configuration)
    return Kube(kubernetes.client.ApiClient(configuration))
