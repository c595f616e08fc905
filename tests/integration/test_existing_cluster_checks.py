"""`BATCOMPUTER_USE_EXISTING_CLUSTER=1` with a variable missing: one message, before any test."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_a_missing_variable_ends_the_run_before_any_test_with_one_message(tmp_path):
    environ = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("BATCOMPUTER_") and name != "KUBECONFIG"
    }
    environ |= {
        "BATCOMPUTER_USE_EXISTING_CLUSTER": "1",
        "KUBECONFIG": str(tmp_path / "kubeconfig"),
        "BATCOMPUTER_SERVER_IMAGE": "registry.example/batcomputer-server:0.1.0",
        "BATCOMPUTER_OPERATOR_IMAGE": "registry.example/batcomputer-operator:0.1.0",
    }
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "tests/cluster", "tests/e2e"],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 4, output
    assert output.count("BATCOMPUTER_HOST_IP: an address of this machine that pods can reach") == 1
    assert "BATCOMPUTER_USE_EXISTING_CLUSTER=1 needs:" in output
    assert " passed" not in output
    assert " error" not in output
