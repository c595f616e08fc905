"""The product wheel carries the product only; the developer tooling is a wheel of its own.

Both wheels are built by pip from a copy of the sources, as a user's `pip install` would.
"""

from __future__ import annotations

import email.parser
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PRODUCT_PACKAGES = {
    "batcomputer_bundle",
    "batcomputer_server",
    "batcomputer_training",
    "batcomputer_operator",
}
DEVELOPER_COMMANDS = {
    "batcomputer-cluster",
    "batcomputer-images",
    "batcomputer-azurite",
    "batcomputer-demo",
}
DEVELOPER_DISTRIBUTIONS = {
    "pytest",
    "pytest-timeout",
    "httpx",
    "openapi-spec-validator",
    "schemathesis",
    "selenium",
    "lupa",
    "import-linter",
    "ruff",
    "batcomputer-dev",
}
SKIP = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist")


def _build_wheel(source: Path, out: Path) -> Path:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--quiet",
            "--wheel-dir",
            str(out),
            str(source),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    (wheel,) = out.glob("*.whl")
    return wheel


@pytest.fixture(scope="module")
def product_wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    source = tmp_path_factory.mktemp("product-source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, source / name)
    for folder in ("server-image", "training", "operator", "devtools"):
        shutil.copytree(REPO_ROOT / folder, source / folder, ignore=SKIP)
    wheel = _build_wheel(source, tmp_path_factory.mktemp("product-wheel"))
    return zipfile.ZipFile(wheel)


@pytest.fixture(scope="module")
def devtools_wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    source = tmp_path_factory.mktemp("devtools-source") / "devtools"
    shutil.copytree(REPO_ROOT / "devtools", source, ignore=SKIP)
    wheel = _build_wheel(source, tmp_path_factory.mktemp("devtools-wheel"))
    return zipfile.ZipFile(wheel)


def _dist_info(wheel: zipfile.ZipFile, name: str) -> str:
    (member,) = [item for item in wheel.namelist() if item.endswith(f".dist-info/{name}")]
    return wheel.read(member).decode()


def _top_level_packages(wheel: zipfile.ZipFile) -> set[str]:
    return {
        item.split("/")[0] for item in wheel.namelist() if not item.split("/")[0].endswith("-info")
    }


def _requirements(metadata_text: str) -> set[tuple[str, str]]:
    """(name, marker) of every Requires-Dist; the marker is '' when unconditional."""
    metadata = email.parser.Parser().parsestr(metadata_text)
    requirements = set()
    for line in metadata.get_all("Requires-Dist") or []:
        requirement, _, marker = line.partition(";")
        name = requirement.split("[")[0]
        for separator in "<>=!~ (":
            name = name.split(separator)[0]
        requirements.add((name.strip().lower(), marker.strip()))
    return requirements


def test_product_wheel_holds_exactly_the_four_product_packages(product_wheel):
    assert _top_level_packages(product_wheel) == PRODUCT_PACKAGES
    assert not [item for item in product_wheel.namelist() if "batcomputer_dev" in item]


def test_product_wheel_installs_no_developer_command_or_dependency(product_wheel):
    entry_points = _dist_info(product_wheel, "entry_points.txt")
    assert not [command for command in DEVELOPER_COMMANDS if command in entry_points]
    requirements = _requirements(_dist_info(product_wheel, "METADATA"))
    assert not DEVELOPER_DISTRIBUTIONS & {name for name, _ in requirements}
    assert "dev" not in email.parser.Parser().parsestr(
        _dist_info(product_wheel, "METADATA")
    ).get_all("Provides-Extra")


def test_the_operator_extra_pulls_no_numpy(product_wheel):
    """The operator image installs the base requirements plus [operator] only."""
    requirements = _requirements(_dist_info(product_wheel, "METADATA"))
    installed = {name for name, marker in requirements if marker in ("", 'extra == "operator"')}
    assert ("numpy", 'extra == "server"') in requirements
    assert not {"numpy", "scikit-learn", "onnxruntime"} & installed


def test_devtools_wheel_holds_only_the_tooling_and_its_commands(devtools_wheel):
    assert _top_level_packages(devtools_wheel) == {"batcomputer_dev"}
    entry_points = _dist_info(devtools_wheel, "entry_points.txt")
    assert all(command in entry_points for command in DEVELOPER_COMMANDS)
