"""Watch streams that keep the cache current, as client-go's reflector does: LIST once,
then WATCH from that resource version with bookmarks, for a jittered 5 to 10 minutes
per request; LIST again only when the API server has forgotten the version (410).

Each stream runs in its own daemon thread and reports every change to a callback,
which must be thread-safe.
"""

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass

from batcomputer_operator import requeue
from batcomputer_operator.cache import Cache
from batcomputer_operator.kube import Kube, KubeError

_log = logging.getLogger("batcomputer_operator")
_GONE = 410

OnChange = Callable[[str, dict], None]


@dataclass(frozen=True)
class Source:
    """What one stream watches: a kind in a namespace (None: all), by label selector."""

    kind: str
    namespace: str | None
    selector: str


class Reflector:
    def __init__(self, kube: Kube, cache: Cache, source: Source, on_change: OnChange) -> None:
        self.kube = kube
        self.cache = cache
        self.source = source
        self.on_change = on_change
        self.synced = threading.Event()

    def start(self, stop: threading.Event) -> None:
        name = f"watch-{self.source.kind}-{self.source.namespace or 'all'}"
        threading.Thread(target=self.run, args=(stop,), name=name, daemon=True).start()

    def run(self, stop: threading.Event) -> None:
        failures = 0
        version: str | None = None
        while not stop.is_set():
            try:
                if version is None:
                    version = self._relist()
                version = self._follow(version, stop)
                failures = 0
            except KubeError as error:
                if error.status == _GONE:
                    version = None
                    continue
                delay = requeue.backoff(failures)
                failures += 1
                _log.warning("%s: retrying in %.1f s: %s", self._name, delay, error)
                stop.wait(delay)

    @property
    def _name(self) -> str:
        return f"watch {self.source.kind} in {self.source.namespace or 'every namespace'}"

    def _relist(self) -> str:
        source = self.source
        items, version = self.kube.list(source.kind, source.namespace, source.selector)
        for obj in self.cache.replace(source.kind, source.namespace, items):
            self.on_change(source.kind, obj)
        self.synced.set()
        return version

    def _follow(self, version: str, stop: threading.Event) -> str | None:
        source = self.source
        seconds = random.randint(300, 600)
        for kind, obj in self.kube.watch(
            source.kind, source.namespace, source.selector, version, seconds
        ):
            if stop.is_set():
                break
            if kind == "ERROR":
                raise KubeError(obj.get("code", 0), obj.get("message", "watch error"))
            version = obj.get("metadata", {}).get("resourceVersion") or version
            if kind == "BOOKMARK":
                continue
            if kind == "DELETED":
                metadata = obj["metadata"]
                self.cache.remove(source.kind, metadata.get("namespace", ""), metadata["name"])
                self.on_change(source.kind, obj)
            elif self.cache.put(source.kind, {"kind": source.kind, **obj}):
                self.on_change(source.kind, obj)
        return version
