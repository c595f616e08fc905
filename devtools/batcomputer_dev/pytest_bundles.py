"""pytest plugin: real model bundles, trained once per test session.

``trained_bundles`` trains the shipped ``titanic`` and ``crime`` configurations as
version 1.0.0 through the ``batcomputer-train`` code path into a session temp folder
(≈ 3 s + 7 s on two cores; the data wheels come from the download cache after the
first run) and gives their folders::

    def test_something(trained_bundles):
        folder = trained_bundles.titanic          # .../titanic/1.0.0
        folder = trained_bundles["crime"]         # .../crime/1.0.0
        root = trained_bundles.root               # holds <model>/<version>/

Loaded from ``tests/conftest.py`` via ``pytest_plugins``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

MODELS = ("titanic", "crime")
VERSION = "1.0.0"


@dataclass(frozen=True)
class TrainedBundles:
    root: Path
    titanic: Path
    crime: Path
    version: str = VERSION

    def __getitem__(self, model: str) -> Path:
        if model not in MODELS:
            raise KeyError(f"no trained bundle {model!r}; have {MODELS}")
        return getattr(self, model)

    def __iter__(self) -> Iterator[str]:
        return iter(MODELS)

    def items(self) -> list[tuple[str, Path]]:
        return [(model, self[model]) for model in MODELS]


def train_bundle(model: str, version: str, out: Path, *extra: str) -> Path:
    """Train through the CLI's own entry (argument parsing included); return the folder."""
    from batcomputer_training import cli

    return cli.run([model, "--version", version, "--out", str(out), "--quiet", *extra])


@pytest.fixture(scope="session")
def trained_bundles(tmp_path_factory: pytest.TempPathFactory) -> TrainedBundles:
    root = tmp_path_factory.mktemp("bundles")
    folders = {model: train_bundle(model, VERSION, root) for model in MODELS}
    return TrainedBundles(root=root, **folders)
