"""examples/gitops/argocd/batmodel-health.lua in real Lua, on BatModels captured from a cluster.

tests/data/batmodel-statuses/ holds live objects that tests/e2e/test_gitops_health.py
captured from the API server in each state of a model's life (see its README).
"""

import json
from pathlib import Path

import pytest

from batcomputer_dev.gitops_health import argocd_health

REPO = Path(__file__).resolve().parents[2]
LUA = (REPO / "examples" / "gitops" / "argocd" / "batmodel-health.lua").read_text()
CAPTURED = REPO / "tests" / "data" / "batmodel-statuses"

EXPECTED = {
    "no-status": "Progressing",
    "ready": "Healthy",
    "generation-lag": "Progressing",
    "rolling-out": "Progressing",
    "ready-after-release": "Healthy",
    "stalled": "Degraded",
    "recovered": "Healthy",
}


def _captured(state: str) -> dict:
    return json.loads((CAPTURED / f"{state}.json").read_text())


def test_every_state_was_captured():
    assert sorted(path.stem for path in CAPTURED.glob("*.json")) == sorted(EXPECTED)


# Argo CD runs gopher-lua (Lua 5.1); the script must also hold on a current Lua.
@pytest.mark.parametrize("lua", ["lua51", "lua54"])
@pytest.mark.parametrize("state", sorted(EXPECTED))
def test_health_of_each_captured_state(state, lua):
    assert argocd_health(_captured(state), LUA, lua).status == EXPECTED[state]


def test_degraded_message_is_the_failing_containers_reason():
    stalled = _captured("stalled")
    (condition,) = [c for c in stalled["status"]["conditions"] if c["type"] == "Stalled"]
    assert argocd_health(stalled, LUA).message == condition["message"]
    assert "exited 3" in condition["message"]


def test_progressing_message_names_the_unobserved_generation():
    lagging = _captured("generation-lag")
    message = argocd_health(lagging, LUA).message
    assert f"generation {lagging['metadata']['generation']}" in message
    assert f"generation {lagging['status']['observedGeneration']}" in message


def test_a_stale_ready_status_is_not_healthy():
    """Ready=True describing an older spec is exactly what the generation check guards."""
    lagging = _captured("generation-lag")
    assert any(
        c["type"] == "Ready" and c["status"] == "True" for c in lagging["status"]["conditions"]
    )
    assert argocd_health(lagging, LUA).status == "Progressing"


def test_healthy_message_says_what_serves():
    message = argocd_health(_captured("ready-after-release"), LUA).message
    assert "1.0.1" in message
