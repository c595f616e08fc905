"""kopf wiring: watch events wake one worker per BatModel; the worker runs reconcile passes.

Only raw event handlers are used, so kopf keeps no state on the BatModel (no
finalizers, no annotations): the operator never writes to a BatModel except its
status. A worker sleeps on an asyncio.Event that BatModel and child events
set; a burst of child events (a rollout) collapses into a few passes, and an
idle model costs nothing but a rare safety resync that reads and writes nothing.
"""

import asyncio
import contextlib
import datetime
import logging
import os
from typing import Any

import kopf

from batcomputer_operator import reconcile
from batcomputer_operator.config import OperatorConfig, load_config
from batcomputer_operator.kube import KubeError, connect
from batcomputer_operator.naming import MANAGED_BY, MODEL_LABEL

_MANAGED = {"app.kubernetes.io/managed-by": MANAGED_BY}
_DEBOUNCE_SECONDS = 0.3
_log = logging.getLogger("batcomputer_operator")


class _Worker:
    def __init__(self) -> None:
        self.wake = asyncio.Event()
        self.task: asyncio.Task | None = None


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _post(outcome: reconcile.Outcome) -> None:
    metadata = outcome.model["metadata"]
    body = {
        "apiVersion": outcome.model["apiVersion"],
        "kind": outcome.model["kind"],
        "metadata": {k: metadata[k] for k in ("name", "namespace", "uid")},
    }
    for step in outcome.steps:
        _log.info(
            "%s/%s %s: %s", metadata["namespace"], metadata["name"], step.reason, step.message
        )
        if step.warning:
            kopf.warn(body, reason=step.reason, message=step.message)
        else:
            kopf.info(body, reason=step.reason, message=step.message)


async def _work(memo: Any, namespace: str, name: str, worker: _Worker) -> None:
    config: OperatorConfig = memo.config
    timeout = 0.0
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(worker.wake.wait(), timeout=timeout)
        await asyncio.sleep(_DEBOUNCE_SECONDS)
        worker.wake.clear()
        try:
            outcome = await asyncio.to_thread(
                reconcile.reconcile, memo.kube, config, namespace, name, _now()
            )
        except KubeError as error:  # API server away or busy: nothing to debug here
            _log.warning("%s/%s: reconcile interrupted, retrying: %s", namespace, name, error)
            timeout = config.pending_resync_seconds
            continue
        except Exception:
            _log.exception("%s/%s: reconcile failed, retrying", namespace, name)
            timeout = config.pending_resync_seconds
            continue
        if outcome is None:
            if worker.wake.is_set():  # recreated under the same name meanwhile
                continue
            memo.workers.pop((namespace, name), None)
            return
        _post(outcome)
        timeout = config.resync_seconds if outcome.ready else config.pending_resync_seconds


def _wake(memo: Any, namespace: str, name: str, *, start: bool) -> None:
    worker = memo.workers.get((namespace, name))
    if worker is None:
        if not start:
            return
        worker = memo.workers[namespace, name] = _Worker()
        worker.task = asyncio.create_task(_work(memo, namespace, name, worker))
    worker.wake.set()


def initial_memo(config: OperatorConfig) -> kopf.Memo:
    """Shared state of the handlers, seeded with the CLI's settings."""
    return kopf.Memo(config=config)


@kopf.on.startup()
async def _startup(memo: Any, settings: kopf.OperatorSettings, **_: Any) -> None:
    if getattr(memo, "config", None) is None:  # started by `kopf run`, not by our CLI
        memo.config = load_config([], os.environ)
    memo.kube = await asyncio.to_thread(connect)
    memo.workers = {}
    settings.watching.server_timeout = 300
    # kopf's "Handler succeeded" for every pod event and a line per liveness probe
    # would bury the rollout steps.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


@kopf.on.cleanup()
async def _cleanup(memo: Any, **_: Any) -> None:
    for worker in list(getattr(memo, "workers", {}).values()):
        if worker.task is not None:
            worker.task.cancel()


@kopf.on.event("batcomputer.io", "v1alpha1", "batmodels")
async def batmodel_changed(event: dict, name: str, namespace: str, memo: Any, **_: Any) -> None:
    _wake(memo, namespace, name, start=event.get("type") != "DELETED")


@kopf.on.event("apps", "v1", "deployments", labels=_MANAGED)
@kopf.on.event("", "v1", "services", labels=_MANAGED)
@kopf.on.event("networking.k8s.io", "v1", "ingresses", labels=_MANAGED)
@kopf.on.event("", "v1", "pods", labels=_MANAGED)
async def child_changed(labels: dict, namespace: str, memo: Any, **_: Any) -> None:
    if MODEL_LABEL in labels:
        _wake(memo, namespace, labels[MODEL_LABEL], start=False)


# Endpoints bear their Service's name, which is the BatModel's: matched by that name,
# which the Endpoints controller guarantees, not by labels it may or may not copy from
# the Service. Other Endpoints find no worker and wake nothing.
@kopf.on.event("", "v1", "endpoints")
async def service_endpoints_changed(name: str, namespace: str, memo: Any, **_: Any) -> None:
    _wake(memo, namespace, name, start=False)
