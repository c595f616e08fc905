"""The operator's view of the cluster: objects kept current by watch events and by the
objects the API server returns from writes, so reconcile passes read nothing from
the API server.

Objects are indexed by the name of the BatModel they belong to: the model label on
its children, the Service name label on its Service's EndpointSlices (the Service
bears the model's name).
"""

import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from batcomputer_operator.naming import MODEL_LABEL

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
_Key = tuple[str, str]  # (namespace, name)


def _key(obj: Mapping[str, Any]) -> _Key:
    metadata = obj["metadata"]
    return metadata.get("namespace", ""), metadata["name"]


def model_of(kind: str, obj: Mapping[str, Any]) -> str | None:
    """The name of the BatModel `obj` belongs to, if any."""
    if kind == "BatModel":
        return obj["metadata"]["name"]
    labels = obj["metadata"].get("labels") or {}
    if kind == "EndpointSlice":
        return labels.get(SERVICE_NAME_LABEL)
    return labels.get(MODEL_LABEL)


def _newer(new: Mapping[str, Any], old: Mapping[str, Any] | None) -> bool:
    """Whether `new` is a later state than `old`. Resource versions are opaque, but
    every API server in use numbers them from etcd's revision, so numbers are compared
    when both are numbers; a write's response then never undoes a later watch event."""
    if old is None:
        return True
    new_version = new["metadata"].get("resourceVersion", "")
    old_version = old["metadata"].get("resourceVersion", "")
    if new_version.isdigit() and old_version.isdigit():
        return int(new_version) > int(old_version)
    return new_version != old_version


class Cache:
    """Thread-safe: watch threads write, reconcile passes read."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._objects: dict[str, dict[_Key, dict]] = defaultdict(dict)
        self._by_model: dict[tuple[str, str, str], set[str]] = defaultdict(set)

    def _index(self, kind: str, obj: Mapping[str, Any], add: bool) -> None:
        model = model_of(kind, obj)
        if model is None:
            return
        namespace, name = _key(obj)
        names = self._by_model[kind, namespace, model]
        if add:
            names.add(name)
        else:
            names.discard(name)
            if not names:
                del self._by_model[kind, namespace, model]

    def put(self, kind: str, obj: dict) -> bool:
        """Store `obj` unless what is stored is as new; whether anything changed."""
        key = _key(obj)
        with self._lock:
            old = self._objects[kind].get(key)
            if not _newer(obj, old):
                return False
            if old is not None:
                self._index(kind, old, add=False)
            self._objects[kind][key] = obj
            self._index(kind, obj, add=True)
            return True

    def remove(self, kind: str, namespace: str, name: str) -> dict | None:
        with self._lock:
            old = self._objects[kind].pop((namespace, name), None)
            if old is not None:
                self._index(kind, old, add=False)
            return old

    def replace(self, kind: str, namespace: str | None, objects: Iterable[dict]) -> list[dict]:
        """Make `kind` in `namespace` (None: everywhere) exactly `objects`, as a fresh
        LIST shows them; returns what changed, removed objects included."""
        fresh = {_key(obj): obj for obj in objects}
        with self._lock:
            stored = self._objects[kind]
            scope = [key for key in stored if namespace is None or key[0] == namespace]
            changed = [stored[key] for key in scope if key not in fresh]
            for key in scope:
                if key not in fresh:
                    self._index(kind, stored.pop(key), add=False)
        for obj in fresh.values():
            if self.put(kind, obj):
                changed.append(obj)
        return changed

    def get(self, kind: str, namespace: str, name: str) -> dict | None:
        with self._lock:
            return self._objects[kind].get((namespace, name))

    def of_model(self, kind: str, namespace: str, model: str) -> list[dict]:
        with self._lock:
            names = sorted(self._by_model.get((kind, namespace, model), ()))
            return [self._objects[kind][namespace, name] for name in names]

    def keys(self, kind: str) -> list[_Key]:
        with self._lock:
            return list(self._objects[kind])

    def sizes(self) -> dict[str, int]:
        with self._lock:
            return {kind: len(objects) for kind, objects in self._objects.items()}
