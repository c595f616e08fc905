"""The fetcher's pure decisions: pins, which digest each file must have, exit codes."""

import pytest

from batcomputer_bundle import bundle
from batcomputer_bundle.blob_uri import BlobUriError
from batcomputer_bundle.blobstore import (
    BlobNotFoundError,
    BlobStoreError,
    StorageAuthError,
    StorageUnreachableError,
)
from batcomputer_server import fetch, fetch_cli

MODEL_DIGEST = "a" * 64
MANIFEST = {
    "files": {
        "model.pkl": {"sha256": MODEL_DIGEST, "bytes": 10},
        "lookup.pkl": {"sha256": "b" * 64, "bytes": 10},
        "flags.pkl": {"sha256": "c" * 64, "bytes": 10},
    }
}


def test_pins_parse_to_lower_case_hex_by_file():
    pins = fetch.parse_pins([f"model.pkl={MODEL_DIGEST.upper()}", f"flags.pkl={'c' * 64}"])
    assert pins == {"model.pkl": MODEL_DIGEST, "flags.pkl": "c" * 64}


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ("model.pkl", "FILE=HEX"),
        (f"={MODEL_DIGEST}", "FILE=HEX"),
        ("model.pkl=abc", "64 hex digits, got 3"),
        ("model.pkl=" + "g" * 64, "64 hex digits"),
    ],
)
def test_malformed_pins_are_usage_errors(argument, message):
    with pytest.raises(fetch.PinError, match=message):
        fetch.parse_pins([argument])


def test_two_different_pins_for_one_file_are_refused():
    with pytest.raises(fetch.PinError, match=r"two different digests for model\.pkl"):
        fetch.parse_pins([f"model.pkl={MODEL_DIGEST}", f"model.pkl={'b' * 64}"])


def test_every_listed_file_gets_the_manifest_digest_and_agreeing_pins_pass():
    expected = fetch.expected_files(MANIFEST, {"model.pkl": MODEL_DIGEST})
    assert expected == {"model.pkl": MODEL_DIGEST, "lookup.pkl": "b" * 64, "flags.pkl": "c" * 64}


def test_a_pin_disagreeing_with_the_manifest_fails_closed_as_a_mismatch():
    with pytest.raises(fetch.DigestMismatchError, match=r"sha256 mismatch for model\.pkl"):
        fetch.expected_files(MANIFEST, {"model.pkl": "d" * 64})


def test_a_pin_for_a_file_outside_the_bundle_fails_closed():
    with pytest.raises(fetch.DigestMismatchError, match=r"pinned file model\.onnx is not part"):
        fetch.expected_files(MANIFEST, {"model.onnx": "d" * 64})


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (BlobUriError("bad uri"), 2),
        (fetch.PinError("bad pin"), 2),
        (BlobNotFoundError("blob not found: x"), 3),
        (StorageAuthError("authentication failed"), 4),
        (fetch.DigestMismatchError("sha256 mismatch for model.pkl"), 5),
        (StorageUnreachableError("storage unreachable after 3 attempts"), 6),
        (BlobStoreError("storage refused the request"), 6),
        (bundle.BundleError("bundle.json is not valid JSON"), 7),
    ],
)
def test_each_failure_kind_has_its_documented_exit_code(error, code):
    assert fetch.exit_code_for(error) == code


def test_bad_source_uri_exits_2_with_the_reason_in_the_termination_log(tmp_path, capsys):
    log = tmp_path / "termination-log"
    uri = "ftp://acct1.blob.core.windows.net/models/x?sig=secret"
    code = fetch_cli.main(
        ["--source", uri, "--dest", str(tmp_path / "b"), "--termination-log", str(log)]
    )
    assert code == 2
    reason = log.read_text().strip()
    assert "must start with https://" in reason and "secret" not in reason
    assert reason in capsys.readouterr().err


def test_malformed_pin_exits_2_before_any_download(tmp_path, capsys):
    code = fetch_cli.main(
        [
            "--source",
            "http://127.0.0.1:9/devstoreaccount1/models/x",
            "--dest",
            str(tmp_path / "b"),
            "--sha256",
            "model.pkl=nothex",
        ]
    )
    assert code == 2
    assert "--sha256 for model.pkl must be 64 hex digits" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
