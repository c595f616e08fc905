"""Blob credentials from a mounted Secret's files: read as the environment would carry them."""

import pytest

from batcomputer_bundle.blob_uri import BlobUriError
from batcomputer_server.credentials_dir import MAX_CREDENTIAL_BYTES, read_credentials

SECRET = "AccountName=acct;AccountKey=c2VjcmV0LWtleS1kby1ub3QtbG9n"


def test_each_file_present_becomes_its_environment_name(tmp_path):
    (tmp_path / "connectionString").write_text(SECRET + "\n")
    (tmp_path / "sasToken").write_text("sv=2025&sig=abc")
    assert read_credentials(tmp_path) == {
        "AZURE_STORAGE_CONNECTION_STRING": SECRET,
        "AZURE_STORAGE_SAS_TOKEN": "sv=2025&sig=abc",
    }


def test_missing_and_empty_files_give_no_credential(tmp_path):
    (tmp_path / "sasToken").write_text("  \n")
    (tmp_path / "unrelated").write_text("ignored")
    assert read_credentials(tmp_path) == {}


def test_a_mounted_secret_reads_through_its_symlinks(tmp_path):
    # The kubelet writes a Secret volume as symlinks into a timestamped ..data folder.
    data = tmp_path / "..2026_01_01" / "sasToken"
    data.parent.mkdir()
    data.write_text("sv=1&sig=xyz")
    (tmp_path / "sasToken").symlink_to(data)
    assert read_credentials(tmp_path) == {"AZURE_STORAGE_SAS_TOKEN": "sv=1&sig=xyz"}


def _refused(directory) -> str:
    with pytest.raises(BlobUriError) as refused:
        read_credentials(directory)
    return str(refused.value)


def test_a_missing_folder_is_named(tmp_path):
    assert "is not a folder" in _refused(tmp_path / "absent")


def test_hostile_files_are_refused_without_echoing_their_content(tmp_path):
    (tmp_path / "connectionString").mkdir()
    assert "not a regular file" in _refused(tmp_path)
    (tmp_path / "connectionString").rmdir()
    (tmp_path / "connectionString").write_bytes(b"AccountKey=" + b"k" * MAX_CREDENTIAL_BYTES)
    message = _refused(tmp_path)
    assert "exceeds" in message and "kkkk" not in message
    (tmp_path / "connectionString").write_bytes(b"AccountKey=\xff\xfesecret")
    message = _refused(tmp_path)
    assert "not UTF-8" in message and "secret" not in message
