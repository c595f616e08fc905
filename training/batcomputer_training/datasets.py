"""Raw training data: CSV files shipped inside PyPI wheels, or CSV files on disk.

The real data sets travel inside wheels on PyPI (facts in the training README). A
wheel is fetched once with ``pip download --no-deps`` into the cache
(``$XDG_CACHE_HOME/batcomputer/data``, default ``~/.cache/batcomputer/data``), its
sha256 is checked every time it is used, and the CSV files are read straight out of
it with :mod:`zipfile`; the package is never installed. A second run is offline.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from batcomputer_bundle.bundle import is_sha256_hex, sha256_file
from batcomputer_training.config import DataSource

KNOWN_WHEEL_SHA256 = {
    # Observed on PyPI when the configs were written; a different file is refused.
    ("crime-sim-toolkit", "1.5.0"): (
        "d56d6ee28eb7bbb65d8e36f211413108620df221ce0c838fefb25013f475001c"
    ),
    ("dataprep", "0.4.1"): "7de0d2c7fc285b03f816aa91fe98197d4d4d1c6b9c280bf87b7f7139547d4c1a",
}

_PIP_TIMEOUT_SECONDS = 300


class DatasetError(Exception):
    """The raw data could not be obtained or read; the message says what to do."""


@dataclass(frozen=True)
class RawData:
    """Raw rows (every column as text) and where they came from."""

    frame: pd.DataFrame
    files: tuple[str, ...]
    """One entry per file read: ``<wheel>!<member> (sha256 of the wheel)`` or a path."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "batcomputer" / "data"


def _normalized(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _wheel_prefix(package: str, version: str) -> str:
    return f"{_normalized(package).replace('-', '_')}-{version}-"


def _find_cached(folder: Path, package: str, version: str) -> Path | None:
    prefix = _wheel_prefix(package, version)
    if not folder.is_dir():
        return None
    matches = sorted(
        p for p in folder.iterdir() if p.name.lower().startswith(prefix) and p.suffix == ".whl"
    )
    return matches[0] if matches else None


def expected_sha256(package: str, version: str, configured: str | None = None) -> str:
    """The digest the wheel must have: the configured one, else the known one."""
    known = KNOWN_WHEEL_SHA256.get((_normalized(package), version))
    if configured and known and configured.lower() != known:
        raise DatasetError(
            f"the configuration pins {package}=={version} to sha256 {configured}, "
            f"but its known digest is {known}"
        )
    digest = (configured or known or "").lower()
    if not is_sha256_hex(digest):
        raise DatasetError(
            f"no sha256 known for {package}=={version}: give it in the configuration's "
            '[data] section as sha256 = "<64 hex digits>"'
        )
    return digest


def obtain_wheel(package: str, version: str, sha256: str | None = None) -> Path:
    """The verified wheel ``package==version`` in the cache, downloaded on first use."""
    expected = expected_sha256(package, version, sha256)
    folder = cache_dir()
    cached = _find_cached(folder, package, version)
    if cached is not None:
        if sha256_file(cached) == expected:
            return cached
        cached.unlink()  # a damaged or foreign file: fetch it again
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as scratch:
        command = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", "--no-input", "--quiet",
            "--dest", scratch, f"{package}=={version}",
        ]  # fmt: skip
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=_PIP_TIMEOUT_SECONDS, check=False
            )
        except subprocess.TimeoutExpired:
            raise DatasetError(
                f"pip download {package}=={version} took longer than {_PIP_TIMEOUT_SECONDS} s; "
                "is PyPI reachable?"
            ) from None
        if result.returncode != 0:
            detail = " | ".join((result.stderr or result.stdout).strip().splitlines()[-3:])
            raise DatasetError(
                f"pip download {package}=={version} failed (exit {result.returncode}): {detail}. "
                f"The data ships inside that wheel on PyPI; check the network, or place the "
                f"wheel in {folder} yourself."
            )
        downloaded = _find_cached(Path(scratch), package, version)
        if downloaded is None:
            raise DatasetError(f"pip download {package}=={version} produced no wheel")
        actual = sha256_file(downloaded)
        if actual != expected:
            raise DatasetError(
                f"sha256 mismatch for {downloaded.name}: expected {expected}, got {actual}; "
                "refusing to train on it"
            )
        target = folder / downloaded.name
        os.replace(downloaded, target)
    return target


def _read_csv(source: object) -> pd.DataFrame:
    # Every column as text: the pipeline decides what is numeric, and a label such
    # as "1" must not become 1.0 on the way.
    return pd.read_csv(source, dtype=str, keep_default_na=True)


def read_wheel_csvs(
    package: str, version: str, members: Sequence[str], sha256: str | None = None
) -> RawData:
    """Concatenated rows of the CSV ``members`` of the wheel ``package==version``."""
    wheel = obtain_wheel(package, version, sha256)
    digest = sha256_file(wheel)
    frames = []
    with zipfile.ZipFile(wheel) as archive:
        present = set(archive.namelist())
        missing = [m for m in members if m not in present]
        if missing:
            raise DatasetError(f"{wheel.name} holds no {', '.join(missing)}")
        for member in members:
            with archive.open(member) as stream:
                frames.append(_read_csv(stream))
    files = tuple(f"{wheel.name}!{member} (wheel sha256 {digest})" for member in members)
    return RawData(frame=_concat(frames), files=files)


def read_local_csvs(paths: Sequence[Path]) -> RawData:
    """Concatenated rows of CSV files on disk."""
    frames = []
    for path in paths:
        if not path.is_file():
            raise DatasetError(f"data file not found: {path}")
        frames.append(_read_csv(path))
    return RawData(frame=_concat(frames), files=tuple(str(p) for p in paths))


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    if not frames:
        raise DatasetError("no data files given")
    columns = list(frames[0].columns)
    for frame in frames[1:]:
        if list(frame.columns) != columns:
            raise DatasetError(
                f"data files disagree on their columns: {columns} vs {list(frame.columns)}"
            )
    return pd.concat(frames, ignore_index=True)


def read_source(source: DataSource) -> RawData:
    """The rows a configuration's ``[data]`` names: from a data wheel, or local CSV files."""
    if source.package:
        return read_wheel_csvs(source.package, source.version or "", source.files, source.sha256)
    base = source.base_dir or Path.cwd()
    return read_local_csvs([base / name for name in source.files])
