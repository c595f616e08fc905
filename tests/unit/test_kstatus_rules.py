"""Captured BatModel statuses satisfy kstatus, which Flux's health checks compute.

kstatus (sigs.k8s.io/cli-utils) reads a custom resource generically: an
observedGeneration behind metadata.generation is InProgress, Reconciling=True is
InProgress, Stalled=True is Failed, and anything else is Current. So the operator
must keep Reconciling=True until Ready=True, or Flux would call a rollout done
too early. The objects are live captures (tests/data/batmodel-statuses/).
"""

import json
from pathlib import Path

import pytest

from batcomputer_dev.gitops_health import condition_status, kstatus

CAPTURED = Path(__file__).resolve().parents[2] / "tests" / "data" / "batmodel-statuses"
STATES = sorted(path.stem for path in CAPTURED.glob("*.json"))

EXPECTED = {
    "no-status": "Current",
    "ready": "Current",
    "generation-lag": "InProgress",
    "rolling-out": "InProgress",
    "ready-after-release": "Current",
    "stalled": "Failed",
    "recovered": "Current",
}


def _captured(state: str) -> dict:
    return json.loads((CAPTURED / f"{state}.json").read_text())


def _observed(state: str) -> bool:
    obj = _captured(state)
    return (obj.get("status") or {}).get("observedGeneration") == obj["metadata"]["generation"]


def test_every_state_was_captured():
    assert sorted(EXPECTED) == STATES


@pytest.mark.parametrize("state", STATES)
def test_kstatus_of_each_captured_state(state):
    assert kstatus(_captured(state)).status == EXPECTED[state]


@pytest.mark.parametrize("state", [state for state in STATES if _observed(state)])
def test_current_exactly_when_ready(state):
    obj = _captured(state)
    assert (kstatus(obj).status == "Current") == (condition_status(obj, "Ready") == "True")


@pytest.mark.parametrize("state", [state for state in STATES if _observed(state)])
def test_failed_exactly_when_stalled_and_never_reconciling_at_once(state):
    obj = _captured(state)
    stalled = condition_status(obj, "Stalled") == "True"
    assert (kstatus(obj).status == "Failed") == stalled
    assert not (stalled and condition_status(obj, "Reconciling") == "True")


@pytest.mark.parametrize("state", [state for state in STATES if _observed(state)])
def test_every_condition_is_stamped_with_the_generation_it_describes(state):
    obj = _captured(state)
    conditions = obj["status"]["conditions"]
    assert {c["type"] for c in conditions} == {"Ready", "Reconciling", "Stalled"}
    assert {c["observedGeneration"] for c in conditions} == {obj["metadata"]["generation"]}


def test_a_lagging_status_is_in_progress_whatever_its_conditions_say():
    lagging = _captured("generation-lag")
    assert condition_status(lagging, "Ready") == "True"
    assert kstatus(lagging).status == "InProgress"


def test_a_status_less_batmodel_is_current_to_kstatus():
    """kstatus's generic fallback: before the operator's first status write Flux cannot wait
    on it; the operator writes status within a reconcile of creation (seconds)."""
    created = _captured("no-status")
    assert "status" not in created
    assert kstatus(created).status == "Current"
