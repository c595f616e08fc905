"""pytest plugin: a ``helm`` fixture that runs the real Helm 3 binary in isolation.

Helm keeps repositories, plugins and a registry config under its cache, config
and data homes; each test session gets fresh temporary ones so nothing on the
machine (or a user's own helm set-up) leaks into the tests.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from batcomputer_dev.helm_tool import helm_binary

_HELM_TIMEOUT_SECONDS = 600


class HelmCommandError(AssertionError):
    pass


@dataclass(frozen=True)
class Helm:
    binary: Path
    env: dict[str, str]

    def __call__(
        self, *args: str | os.PathLike[str], check: bool = True, kubeconfig: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = dict(self.env)
        if kubeconfig is not None:
            env["KUBECONFIG"] = str(kubeconfig)
        command = [str(self.binary), *map(os.fspath, args)]
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=env,
            timeout=_HELM_TIMEOUT_SECONDS,
            check=False,
        )
        if check and result.returncode != 0:
            raise HelmCommandError(
                f"{' '.join(command)} exited {result.returncode}:\n{result.stderr}{result.stdout}"
            )
        return result


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    """Callable ``helm(*args, check=True, kubeconfig=None)`` -> CompletedProcess."""
    homes = tmp_path_factory.mktemp("helm-homes")
    env = dict(os.environ)
    for kind in ("CACHE", "CONFIG", "DATA"):
        home = homes / kind.lower()
        home.mkdir()
        env[f"HELM_{kind}_HOME"] = str(home)
    return Helm(binary=helm_binary(), env=env)
