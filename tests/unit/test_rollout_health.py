"""Argo CD and Flux (kstatus) read a Canary or Shadow rollout under analysis as
Progressing, and a rolled-back one as Degraded with the failed threshold: the BatModel
status a rollout writes, judged by examples/gitops/argocd/batmodel-health.lua in real Lua
and by kstatus' rules.

The statuses are the captured blue/green ones (tests/data/batmodel-statuses) with the
conditions and status.rollout a Canary would carry instead.
"""

import copy
import json
from pathlib import Path

import pytest

from batcomputer_dev.gitops_health import argocd_health, kstatus
from batcomputer_operator.rollout import (
    ANALYSIS_FAILED,
    Measurement,
    Progress,
    next_action,
    replica_split,
    rollout_status,
)
from batcomputer_operator.rollout_spec import parse_rollout

REPO = Path(__file__).resolve().parents[2]
LUA = (REPO / "examples" / "gitops" / "argocd" / "batmodel-health.lua").read_text()
CAPTURED = REPO / "tests" / "data" / "batmodel-statuses"
CANARY = parse_rollout(
    {"strategy": "Canary", "steps": [{"weight": 10, "pause": "1m"}, {"weight": 50}]}, replicas=10
)
PROGRESS = Progress("1.0.1", 0, "2026-11-22T01:00:42Z")


def _with_rollout(state: str, reason: str, decision) -> dict:
    model = copy.deepcopy(json.loads((CAPTURED / f"{state}.json").read_text()))
    for condition in model["status"]["conditions"]:
        condition["reason"] = reason
        condition["message"] = decision.message
    model["status"]["rollout"] = rollout_status(CANARY, PROGRESS, decision, replica_split(10, 10))
    return model


@pytest.mark.parametrize("lua", ["lua51", "lua54"])
def test_an_analysis_in_progress_is_progressing(lua):
    analysing = next_action(CANARY, 0, 5, Measurement(requests=3))
    model = _with_rollout("rolling-out", "Analysing", analysing)
    health = argocd_health(model, LUA, lua)
    assert (health.status, health.message) == ("Progressing", analysing.message)
    assert kstatus(model).status == "InProgress"


@pytest.mark.parametrize("lua", ["lua51", "lua54"])
def test_a_rolled_back_version_is_degraded_naming_the_threshold(lua):
    failed = next_action(CANARY, 0, 5, Measurement(requests=100, errors=30))
    model = _with_rollout("stalled", ANALYSIS_FAILED, failed)
    health = argocd_health(model, LUA, lua)
    assert health.status == "Degraded"
    assert health.message.startswith("maxErrorRatio: 30 of 100 requests failed")
    assert kstatus(model).status == "Failed"
    assert model["status"]["rollout"]["failedThreshold"] == "maxErrorRatio"
