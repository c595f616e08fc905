"""Raw data from wheels: cache, sha256 verification, clear errors (no network needed)."""

import hashlib
import zipfile

import pytest

from batcomputer_training import datasets
from batcomputer_training.datasets import DatasetError

CSV = "a,b\n1,x\n2,\n"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    # Any pip run in these tests must fail at once instead of reaching out.
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    return tmp_path / "xdg" / "batcomputer" / "data"


def make_wheel(folder, name="toy_data-1.0-py3-none-any.whl", members=None):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    with zipfile.ZipFile(path, "w") as archive:
        for member, text in (members or {"toy_data/rows.csv": CSV}).items():
            archive.writestr(member, text)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_cache_folder_follows_xdg(cache):
    assert datasets.cache_dir() == cache


def test_known_digests_are_recorded():
    assert datasets.expected_sha256("crime-sim-toolkit", "1.5.0").startswith("d56d6ee2")
    assert datasets.expected_sha256("dataprep", "0.4.1").startswith("7de0d2c7")


def test_a_cached_wheel_is_read_without_pip(cache, monkeypatch):
    _, digest = make_wheel(cache)
    monkeypatch.setattr(datasets.subprocess, "run", lambda *a, **k: pytest.fail("pip ran"))
    raw = datasets.read_wheel_csvs("toy-data", "1.0", ["toy_data/rows.csv"], sha256=digest)
    assert raw.frame["a"].tolist() == ["1", "2"]  # text, not numbers
    assert raw.frame["b"].isna().tolist() == [False, True]
    assert raw.files == (
        f"toy_data-1.0-py3-none-any.whl!toy_data/rows.csv (wheel sha256 {digest})",
    )


def test_a_damaged_cached_wheel_is_fetched_again_and_pip_failure_is_clear(cache):
    path, digest = make_wheel(cache)
    path.write_bytes(b"tampered")
    with pytest.raises(DatasetError, match=r"pip download toy-data==1.0 failed \(exit \d+\)"):
        datasets.obtain_wheel("toy-data", "1.0", sha256=digest)
    assert not path.exists()  # the damaged file is gone, not trusted


def test_a_downloaded_wheel_with_the_wrong_digest_is_refused(cache, monkeypatch):
    source, _ = make_wheel(cache.parent / "elsewhere")

    def fake_pip(command, **kwargs):
        dest = command[command.index("--dest") + 1]
        (datasets.Path(dest) / source.name).write_bytes(source.read_bytes())
        return datasets.subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(datasets.subprocess, "run", fake_pip)
    with pytest.raises(DatasetError, match=r"sha256 mismatch for toy_data-1\.0"):
        datasets.obtain_wheel("toy-data", "1.0", sha256="0" * 64)
    assert not any(cache.glob("*.whl"))


def test_a_digest_is_required_for_unknown_wheels(cache):
    with pytest.raises(DatasetError, match=r"no sha256 known for toy-data==1.0.*\[data\]"):
        datasets.obtain_wheel("toy-data", "1.0")


def test_a_configured_digest_must_not_contradict_the_known_one():
    with pytest.raises(DatasetError, match="known digest"):
        datasets.expected_sha256("dataprep", "0.4.1", "0" * 64)


def test_a_missing_member_is_named(cache):
    _, digest = make_wheel(cache)
    with pytest.raises(DatasetError, match=r"holds no toy_data/other\.csv"):
        datasets.read_wheel_csvs("toy-data", "1.0", ["toy_data/other.csv"], sha256=digest)


def test_local_files_must_share_columns(tmp_path):
    (tmp_path / "one.csv").write_text("a,b\n1,2\n")
    (tmp_path / "two.csv").write_text("a,c\n1,2\n")
    with pytest.raises(DatasetError, match="disagree on their columns"):
        datasets.read_local_csvs([tmp_path / "one.csv", tmp_path / "two.csv"])
    with pytest.raises(DatasetError, match="not found"):
        datasets.read_local_csvs([tmp_path / "three.csv"])
