"""Test tiers come from the directory a test lives in; shared fixtures are plugins."""

from pathlib import Path

import pytest

_TIERS = ("unit", "integration", "cluster", "e2e")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tests_root = Path(__file__).parent
    for item in items:
        tier = Path(item.fspath).relative_to(tests_root).parts[0]
        if tier in _TIERS:
            item.add_marker(getattr(pytest.mark, tier))
