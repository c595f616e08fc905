"""Leader election on a coordination.k8s.io Lease, with client-go's rules and
controller-runtime's default timings: several replicas run, one acts.

A candidate takes the Lease when it is free or when its holder has not renewed it
for a whole lease duration, as timed by the candidate's own clock from the moment
it saw the Lease change (clocks of different nodes are never compared). The
leader renews every retry period and gives up after failing to renew for the
renew deadline, before any candidate may take over.
"""

import datetime
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from batcomputer_operator.kube import Kube, KubeError

_log = logging.getLogger("batcomputer_operator")


@dataclass(frozen=True)
class Timings:
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


def _micro_time(at: datetime.datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class _Seen:
    """The Lease as last read, and when (by the local monotonic clock) it last changed."""

    version: str | None = None
    since: float = 0.0


def claim(
    lease: Mapping[str, Any] | None,
    identity: str,
    timings: Timings,
    expired: bool,
    wall_now: datetime.datetime,
) -> dict | None:
    """The Lease spec to write to hold the lease, or None when another holds it.

    `expired`: its holder has not renewed it for a lease duration, as seen here.
    """
    spec = (lease or {}).get("spec") or {}
    holder = spec.get("holderIdentity") or None
    if holder not in (None, identity) and not expired:
        return None
    now = _micro_time(wall_now)
    transitions = spec.get("leaseTransitions") or 0
    return {
        "holderIdentity": identity,
        "leaseDurationSeconds": int(timings.lease_duration),
        "acquireTime": spec.get("acquireTime") if holder == identity else now,
        "renewTime": now,
        "leaseTransitions": transitions if holder in (None, identity) else transitions + 1,
    }


class Elector:
    def __init__(
        self,
        kube: Kube,
        *,
        namespace: str,
        name: str,
        identity: str,
        on_started: Callable[[], None],
        on_stopped: Callable[[], None],
        timings: Timings = Timings(),
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.on_started = on_started
        self.on_stopped = on_stopped
        self.timings = timings
        self.leading = False
        self._seen = _Seen()

    def start(self, stop: threading.Event) -> None:
        threading.Thread(target=self.run, args=(stop,), name="leader-election", daemon=True).start()

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set() and not self._try():
            stop.wait(self.timings.retry_period)
        if stop.is_set():
            return
        self.leading = True
        _log.info("leading: holding Lease %s/%s as %s", self.namespace, self.name, self.identity)
        self.on_started()
        renewed = time.monotonic()
        while not stop.wait(self.timings.retry_period):
            if self._try():
                renewed = time.monotonic()
            elif time.monotonic() - renewed > self.timings.renew_deadline:
                self.leading = False
                _log.error("lost Lease %s/%s: stopping", self.namespace, self.name)
                self.on_stopped()
                return

    def release(self) -> None:
        """Hand the Lease back on a clean shutdown, so a standby takes over at once."""
        if not self.leading:
            return
        self.leading = False
        lease = self._read()
        if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
            return
        spec = {**lease["spec"], "holderIdentity": None, "leaseDurationSeconds": 1}
        try:
            self.kube.replace({**lease, "spec": spec})
        except KubeError as error:
            _log.warning("could not release Lease %s/%s: %s", self.namespace, self.name, error)

    def _read(self) -> dict | None:
        try:
            return self.kube.get("Lease", self.namespace, self.name)
        except KubeError as error:
            _log.warning("reading Lease %s/%s: %s", self.namespace, self.name, error)
            return None

    def _try(self) -> bool:
        """One attempt to take or renew the Lease; whether this replica holds it now."""
        try:
            lease = self.kube.get("Lease", self.namespace, self.name)
            now = time.monotonic()
            version = (lease or {}).get("metadata", {}).get("resourceVersion")
            if version != self._seen.version:
                self._seen = _Seen(version, now)
            duration = ((lease or {}).get("spec") or {}).get("leaseDurationSeconds")
            expired = now - self._seen.since > (duration or self.timings.lease_duration)
            wall = datetime.datetime.now(datetime.UTC)
            spec = claim(lease, self.identity, self.timings, expired, wall)
            if spec is None:
                return False
            if lease is None:
                body = {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": spec,
                }
                written = self.kube.create(body)
            else:
                written = self.kube.replace({**lease, "spec": spec})
        except KubeError as error:
            _log.warning("Lease %s/%s: %s", self.namespace, self.name, error)
            return False
        if written is None:  # someone else wrote it first
            return False
        self._seen = _Seen(written["metadata"].get("resourceVersion"), time.monotonic())
        return True
