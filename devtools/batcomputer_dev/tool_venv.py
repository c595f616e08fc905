"""Python tools whose pinned dependencies clash with the project's, each in a virtualenv of
its own under ``${XDG_CACHE_HOME:-~/.cache}/batcomputer/tools/<name>-<version>``, installed
from PyPI the first time."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


class ToolInstallError(RuntimeError):
    """A tool could not be installed; the message says why."""


def tools_dir() -> Path:
    cache_root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache_root) / "batcomputer" / "tools"


def tool_command(package: str, version: str, command: str) -> Path:
    """The console script ``command`` of ``package==version``, installed on first use."""
    venv = tools_dir() / f"{package}-{version}"
    binary = venv / "bin" / command
    # Written last: a venv without it is an interrupted install, made again from scratch.
    complete = venv / ".installed"
    requirement = f"{package}=={version}"
    if complete.exists() and os.access(binary, os.X_OK):
        return binary
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    _run([sys.executable, "-m", "venv", str(venv)], "python -m venv")
    _run(
        [str(venv / "bin" / "pip"), "install", "--quiet", requirement],
        f"pip install {requirement} (is PyPI reachable?)",
    )
    complete.write_text(requirement + "\n")
    return binary


def _run(command: list[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ToolInstallError(f"{what} failed (exit {result.returncode}): {result.stderr[-800:]}")
