"""Test tiers come from the directory a test lives in; shared fixtures are plugins."""

from pathlib import Path

import pytest

pytest_plugins = [
    "batcomputer_dev.pytest_helm",
    "batcomputer_dev.pytest_azurite",
    "batcomputer_dev.pytest_bundles",
    "batcomputer_dev.pytest_cluster",
]

_TIERS = ("unit", "integration", "cluster", "e2e")
_TESTS_ROOT = Path(__file__).parent


def _tier(item: pytest.Item) -> str:
    return Path(item.fspath).relative_to(_TESTS_ROOT).parts[0]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _tier(item) in _TIERS:
            item.add_marker(getattr(pytest.mark, _tier(item)))
    # Cheap tiers first, so a broken unit fails the run in seconds rather than after
    # the cluster tiers.
    items.sort(key=lambda item: _TIERS.index(_tier(item)) if _tier(item) in _TIERS else 0)
