"""kopf wiring: the BatModel watch and the child watch streams feed the cache and wake
one worker per BatModel; the worker runs reconcile passes on what the cache holds.

Only raw event handlers are used, so kopf keeps no state on the BatModel (no
finalizers, no annotations): the operator never writes to a BatModel except its
status. Children are watched by the operator's own streams, filtered by label on
the API server, so it never receives other workloads' Pods or EndpointSlices.
A worker sleeps until an event wakes it; a burst of events (a rollout) collapses
into a few passes. Failed passes back off exponentially; otherwise the only timer
is a long, jittered resync that reads the cache and writes nothing unless something
changed, so an idle model costs no API request.
"""

import asyncio
import contextlib
import datetime
import logging
import os
import signal
import socket
import threading
import time
import uuid
from typing import Any

import kopf

from batcomputer_operator import events, metrics, reconcile, requeue
from batcomputer_operator.cache import Cache, model_of
from batcomputer_operator.config import OperatorConfig, load_config
from batcomputer_operator.kube import KubeError, connect
from batcomputer_operator.leader import Elector
from batcomputer_operator.naming import MANAGED_BY
from batcomputer_operator.watches import Reflector, Source

_MANAGED_SELECTOR = f"app.kubernetes.io/managed-by={MANAGED_BY}"
_CHILD_KINDS = ("Deployment", "Service", "Ingress", "ConfigMap", "Pod", "EndpointSlice")
_BATMODEL_API = "batcomputer.io/v1alpha1"
_DEBOUNCE_SECONDS = 0.3
# After a pass that wrote children: the next one, unless a watch event comes first.
_SETTLE_SECONDS = 1.0
# A status is never left stale longer than this, in seconds (the controller may be down).
_MAX_DEFERRAL = 10.0
_log = logging.getLogger("batcomputer_operator")
_QUEUE = metrics.WORKQUEUE_DEPTH.labels(metrics.CONTROLLER)
_ADDS = metrics.WORKQUEUE_ADDS.labels(metrics.CONTROLLER)


class _Worker:
    def __init__(self) -> None:
        self.wake = asyncio.Event()
        self.task: asyncio.Task | None = None
        self.uid: str | None = None  # of the BatModel last seen, whose Event budget it has
        self.deferred_since: float | None = None  # when passes began to leave the status be


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _post(memo: Any, outcome: reconcile.Outcome) -> None:
    """Log every step; post it as an Event within the limits (from a worker thread)."""
    metadata = outcome.model["metadata"]
    for step in outcome.steps:
        _log.info(
            "%s/%s %s: %s", metadata["namespace"], metadata["name"], step.reason, step.message
        )
        if not memo.event_limiter.allow(metadata["uid"]):
            continue
        body = events.event(
            outcome.model, step.reason, step.message, warning=step.warning, now=_now()
        )
        try:
            memo.kube.create(body)
        except KubeError as error:
            _log.warning(
                "%s/%s: Event not posted: %s", metadata["namespace"], metadata["name"], error
            )


async def _pass(memo: Any, namespace: str, name: str, worker: _Worker) -> reconcile.Outcome | None:
    started = time.monotonic()
    defer = (
        worker.deferred_since is None or time.monotonic() - worker.deferred_since < _MAX_DEFERRAL
    )
    try:
        return await asyncio.to_thread(
            reconcile.reconcile,
            *(memo.kube, memo.cache, memo.config, namespace, name),
            now=_now(),
            defer=defer,
        )
    finally:
        metrics.RECONCILE_TIME.labels(metrics.CONTROLLER).observe(time.monotonic() - started)


async def _work(memo: Any, namespace: str, name: str, worker: _Worker) -> None:
    await memo.ready.wait()
    failures = 0
    timeout: float | None = 0.0
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(worker.wake.wait(), timeout=timeout)
        await asyncio.sleep(_DEBOUNCE_SECONDS)
        if worker.wake.is_set():
            _QUEUE.dec()
        worker.wake.clear()
        await memo.active.wait()
        try:
            outcome = await _pass(memo, namespace, name, worker)
        except Exception as error:
            metrics.RECONCILE_TOTAL.labels(metrics.CONTROLLER, "error").inc()
            metrics.RECONCILE_ERRORS.labels(metrics.CONTROLLER).inc()
            timeout = requeue.backoff(failures)
            failures += 1
            if isinstance(error, KubeError):  # API server away or busy: nothing to debug
                _log.warning("%s/%s: retrying in %.1f s: %s", namespace, name, timeout, error)
            else:
                _log.exception(
                    "%s/%s: reconcile failed, retrying in %.1f s", namespace, name, timeout
                )
            continue
        metrics.RECONCILE_TOTAL.labels(metrics.CONTROLLER, "success").inc()
        failures = 0
        if outcome is None:
            if worker.wake.is_set():  # recreated under the same name meanwhile
                continue
            memo.workers.pop((namespace, name), None)
            if worker.uid is not None:
                memo.event_limiter.forget(worker.uid)
            return
        worker.uid = outcome.model["metadata"]["uid"]
        if outcome.settled:
            worker.deferred_since = None
        elif worker.deferred_since is None:
            worker.deferred_since = time.monotonic()
        await asyncio.to_thread(_post, memo, outcome)
        timeout = requeue.resync(memo.config.resync_seconds) if outcome.settled else _SETTLE_SECONDS
        if outcome.recheck is not None:  # a rollout step's analysis is due
            timeout = min(timeout, outcome.recheck)


def _wake(memo: Any, namespace: str, name: str, *, start: bool) -> None:
    worker = memo.workers.get((namespace, name))
    if worker is None:
        if not start:
            return
        worker = memo.workers[namespace, name] = _Worker()
        worker.task = asyncio.create_task(_work(memo, namespace, name, worker))
    if not worker.wake.is_set():
        _QUEUE.inc()
        _ADDS.inc()
        worker.wake.set()


def _child_changed(memo: Any, kind: str, obj: dict) -> None:
    model = model_of(kind, obj)
    if model is not None:
        _wake(memo, obj["metadata"].get("namespace", ""), model, start=False)


def _sources(config: OperatorConfig) -> list[Source]:
    namespaces: tuple[str | None, ...] = config.namespaces or (None,)
    return [Source(kind, ns, _MANAGED_SELECTOR) for ns in namespaces for kind in _CHILD_KINDS]


def _start_watches(memo: Any, loop: asyncio.AbstractEventLoop) -> None:
    def on_change(kind: str, obj: dict) -> None:
        loop.call_soon_threadsafe(_child_changed, memo, kind, obj)

    reflectors = [Reflector(memo.kube, memo.cache, s, on_change) for s in _sources(memo.config)]
    for reflector in reflectors:
        reflector.start(memo.stop)

    def wait_synced() -> None:
        for reflector in reflectors:
            reflector.synced.wait()
        loop.call_soon_threadsafe(memo.ready.set)

    threading.Thread(target=wait_synced, name="watch-sync", daemon=True).start()


def _start_leading(memo: Any, loop: asyncio.AbstractEventLoop) -> None:
    config: OperatorConfig = memo.config
    leader_gauge = metrics.LEADER.labels(config.leader_election_id)
    if config.leader_election_namespace is None:
        leader_gauge.set(1)
        memo.active.set()
        return

    def started() -> None:
        leader_gauge.set(1)
        loop.call_soon_threadsafe(memo.active.set)

    def stopped() -> None:
        # Passes under way may still write: a replica that lost the Lease ends at once.
        leader_gauge.set(0)
        os.kill(os.getpid(), signal.SIGTERM)

    identity = f"{socket.gethostname()}_{uuid.uuid4()}"
    memo.elector = Elector(
        memo.kube,
        namespace=config.leader_election_namespace,
        name=config.leader_election_id,
        identity=identity,
        on_started=started,
        on_stopped=stopped,
    )
    memo.elector.start(memo.stop)


def initial_memo(config: OperatorConfig) -> kopf.Memo:
    """Shared state of the handlers, seeded with the CLI's settings."""
    return kopf.Memo(config=config)


@kopf.on.startup()
async def _startup(memo: Any, settings: kopf.OperatorSettings, **_: Any) -> None:
    if getattr(memo, "config", None) is None:  # started by `kopf run`, not by our CLI
        memo.config = load_config([], os.environ)
    memo.kube = await asyncio.to_thread(connect)
    await asyncio.to_thread(memo.kube.use_served_endpoint_slices)
    memo.cache = Cache()
    memo.workers = {}
    memo.stop = threading.Event()
    memo.ready = asyncio.Event()
    memo.active = asyncio.Event()
    memo.elector = None
    memo.event_limiter = events.EventLimiter()
    loop = asyncio.get_running_loop()
    if memo.config.metrics_port:
        for kind in ("BatModel", *_CHILD_KINDS):
            gauge = metrics.CACHE_OBJECTS.labels(kind)
            gauge.set_function(lambda kind=kind: memo.cache.sizes().get(kind, 0))
        metrics.serve(memo.config.metrics_port)
    _start_watches(memo, loop)
    _start_leading(memo, loop)
    settings.watching.server_timeout = 300
    # kopf's "Handler succeeded" for every event and a line per liveness probe
    # would bury the rollout steps.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


@kopf.on.cleanup()
async def _cleanup(memo: Any, **_: Any) -> None:
    if getattr(memo, "stop", None) is not None:
        memo.stop.set()
    for worker in list(getattr(memo, "workers", {}).values()):
        if worker.task is not None:
            worker.task.cancel()
    if getattr(memo, "elector", None) is not None:
        await asyncio.to_thread(memo.elector.release)


@kopf.on.event("batcomputer.io", "v1alpha1", "batmodels")
async def batmodel_changed(event: dict, name: str, namespace: str, memo: Any, **_: Any) -> None:
    if event.get("type") == "DELETED":
        memo.cache.remove("BatModel", namespace, name)
        _wake(memo, namespace, name, start=False)
    elif memo.cache.put(
        "BatModel", {"apiVersion": _BATMODEL_API, "kind": "BatModel", **event["object"]}
    ):
        _wake(memo, namespace, name, start=True)
