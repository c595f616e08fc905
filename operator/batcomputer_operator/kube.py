"""Every Kubernetes API call the operator makes, on plain JSON dicts.

Objects travel as the API server's own JSON (camelCase dicts), so the pure
builders' output can be compared with live objects field by field and sent
unchanged as server-side apply bodies.
"""

import json
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import kubernetes
import urllib3

from batcomputer_operator import metrics

FIELD_MANAGER = "batcomputer-operator"
_TIMEOUT = (5, 30)
# (API group/version, plural); EndpointSlice's version is chosen by discovery.
_RESOURCES = {
    "Deployment": ("apps/v1", "deployments"),
    "Service": ("v1", "services"),
    "Ingress": ("networking.k8s.io/v1", "ingresses"),
    "ConfigMap": ("v1", "configmaps"),
    "Pod": ("v1", "pods"),
    "EndpointSlice": ("discovery.k8s.io/v1", "endpointslices"),
    "BatModel": ("batcomputer.io/v1alpha1", "batmodels"),
    "Lease": ("coordination.k8s.io/v1", "leases"),
    "Event": ("v1", "events"),
}
# Newest first: v1beta1 serves 1.17 to 1.24, v1 from 1.21.
_ENDPOINT_SLICE_VERSIONS = ("discovery.k8s.io/v1", "discovery.k8s.io/v1beta1")


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
        self._host = urlsplit(api_client.configuration.host).netloc
        self._resources = dict(_RESOURCES)

    def _send(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: Any = _TIMEOUT,
    ) -> Any:
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
            response = self._client.call_api(*request, _request_timeout=timeout)
        except (urllib3.exceptions.HTTPError, OSError) as error:
            metrics.REST_REQUESTS.labels("<error>", method, self._host).inc()
            raise KubeError(0, f"API server unreachable: {error}") from error
        metrics.REST_REQUESTS.labels(str(response.status), method, self._host).inc()
        return response

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
        response = self._send(method, path, query=query, body=body, content_type=content_type)
        try:
            data = response.read()
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise KubeError(0, f"API server unreachable: {error}") from error
        if response.status == 404:
            return None
        decoded = json.loads(data) if data else {}
        if not 200 <= response.status < 300:
            raise KubeError(response.status, decoded.get("message", str(data[:200])))
        return decoded

    def _path(self, kind: str, namespace: str | None, name: str | None = None) -> str:
        group_version, plural = self._resources[kind]
        root = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
        scope = f"/namespaces/{quote(namespace, safe='')}" if namespace else ""
        path = f"{root}{scope}/{plural}"
        return f"{path}/{quote(name, safe='')}" if name else path

    def use_served_endpoint_slices(self) -> str:
        """Pick the newest EndpointSlice version the API server serves (API discovery)."""
        group = self._request("GET", "/apis/discovery.k8s.io") or {}
        served = {version.get("groupVersion") for version in group.get("versions") or []}
        for group_version in _ENDPOINT_SLICE_VERSIONS:
            if group_version in served:
                self._resources["EndpointSlice"] = (group_version, "endpointslices")
                return group_version
        raise KubeError(404, "the API server serves no EndpointSlice API (discovery.k8s.io)")

    def get(self, kind: str, namespace: str, name: str) -> dict | None:
        return self._request("GET", self._path(kind, namespace, name))

    def list(self, kind: str, namespace: str | None, selector: str) -> tuple[list[dict], str]:
        """Every `kind` matching the label `selector` in `namespace` (None: everywhere),
        and the resource version to watch from."""
        query = {"labelSelector": selector} if selector else {}
        found = self._request("GET", self._path(kind, namespace), query=query) or {}
        group_version = self._resources[kind][0]
        # List items come without apiVersion and kind; put them back so items compare
        # with manifests like objects read one by one.
        items = [
            {"apiVersion": group_version, "kind": kind, **item} for item in found.get("items") or []
        ]
        return items, (found.get("metadata") or {}).get("resourceVersion", "")

    def watch(
        self, kind: str, namespace: str | None, selector: str, resource_version: str, seconds: int
    ) -> Iterator[tuple[str, dict]]:
        """Watch events after `resource_version` for at most `seconds`, bookmarks included.

        An ERROR event (410 Gone: the version is too old) is yielded like any other.
        """
        query = {
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(seconds),
        }
        if selector:
            query["labelSelector"] = selector
        response = self._send(
            "GET", self._path(kind, namespace), query=query, timeout=(5, seconds + 30)
        )
        if response.status != 200:
            message = response.read()[:200].decode(errors="replace")
            raise KubeError(response.status, f"watch {kind}: {message}")
        buffer = b""
        try:
            for chunk in response.response.stream(65536, decode_content=True):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        event = json.loads(line)
                        yield event.get("type", ""), event.get("object") or {}
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise KubeError(0, f"watch {kind} interrupted: {error}") from error
        finally:
            response.response.release_conn()

    def apply(self, manifest: Mapping[str, Any], *, force: bool = True) -> dict:
        """Server-side apply. With `force`, take back fields someone else changed by hand;
        without, refuse (409) to touch fields another manager set differently."""
        metadata = manifest["metadata"]
        query = {"fieldManager": FIELD_MANAGER}
        if force:
            query["force"] = "true"
        applied = self._request(
            "PATCH",
            self._path(manifest["kind"], metadata["namespace"], metadata["name"]),
            query=query,
            body=manifest,
            content_type="application/apply-patch+yaml",
        )
        if applied is None:
            raise KubeError(404, f"{manifest['kind']} namespace {metadata['namespace']} is gone")
        return applied

    def delete(self, kind: str, namespace: str, name: str) -> None:
        """Delete, in the background; absent already is fine."""
        self._request(
            "DELETE",
            self._path(kind, namespace, name),
            body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"},
        )

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> dict | None:
        """The BatModel as patched, or None when it is gone."""
        return self._request(
            "PATCH",
            self._path("BatModel", namespace, name) + "/status",
            body={"status": dict(status)},
            content_type="application/merge-patch+json",
        )

    def create(self, manifest: Mapping[str, Any]) -> dict | None:
        """POST a new object; None when one of that name exists already (409)."""
        metadata = manifest["metadata"]
        try:
            return self._request(
                "POST", self._path(manifest["kind"], metadata["namespace"]), body=manifest
            )
        except KubeError as error:
            if error.status == 409:
                return None
            raise

    def replace(self, manifest: Mapping[str, Any]) -> dict | None:
        """PUT `manifest`, whose resourceVersion must still be current; None if it is not."""
        metadata = manifest["metadata"]
        try:
            return self._request(
                "PUT",
                self._path(manifest["kind"], metadata["namespace"], metadata["name"]),
                body=manifest,
            )
        except KubeError as error:
            if error.status == 409:
                return None
            raise


def connect() -> Kube:
    """In-cluster credentials when running in a pod, else the kubeconfig (KUBECONFIG)."""
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(client_configuration=configuration)
    # Watches hold a connection each for minutes; passes must not queue behind them.
    configuration.connection_pool_maxsize = 32
    return Kube(kubernetes.client.ApiClient(configuration))
