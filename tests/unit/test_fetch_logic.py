"""The fetcher's pure decisions: pins, which digest each file must have, exit codes."""

import hashlib
from pathlib import Path

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
        (fetch.DestinationError("--dest x is a symlink"), 2),
        (fetch.DigestMismatchError("sha256 mismatch for model.pkl"), 5),
        (bundle.BundleDigestError("sha256 mismatch for bundle.json"), 5),
        (StorageUnreachableError("storage unreachable after 3 attempts"), 6),
        (BlobStoreError("storage refused the request"), 6),
        (bundle.BundleError("bundle.json is not valid JSON"), 7),
        (fetch.BundleTooLargeError("model.pkl", 100, "cut off mid-download"), 7),
        (fetch.SizeLimitError("--max-bytes must be a positive whole number"), 2),
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


def test_the_bundle_digest_argument_is_sha256_colon_64_lower_hex():
    digest = "sha256:" + "ab" * 32
    assert fetch.parse_digest(f" {digest} ") == digest
    assert fetch.parse_digest(None) is None
    for bad in ("ab" * 32, "sha256:" + "AB" * 32, "sha512:" + "ab" * 32, "sha256:", ""):
        with pytest.raises(fetch.PinError, match="--digest must be sha256:"):
            fetch.parse_digest(bad)


def test_malformed_digest_exits_2_before_any_download(tmp_path, capsys):
    code = fetch_cli.main(
        [
            *("--source", "http://127.0.0.1:9/devstoreaccount1/models/x"),
            *("--dest", str(tmp_path / "b"), "--digest", "sha256:nothex"),
        ]
    )
    assert code == 2
    assert "--digest must be sha256: and 64 lowercase hex digits" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_a_destination_that_is_a_file_a_symlink_or_the_root_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "folder")
    with pytest.raises(fetch.DestinationError, match="exists and is not a folder"):
        fetch.check_destination(tmp_path / "file")
    with pytest.raises(fetch.DestinationError, match="is a symlink; the fetcher never follows"):
        fetch.check_destination(tmp_path / "link")
    with pytest.raises(fetch.DestinationError, match="has no parent folder"):
        fetch.check_destination(Path("/"))
    assert fetch.check_destination(tmp_path / "folder") == tmp_path / "folder"
    assert fetch.check_destination(tmp_path / "new") == tmp_path / "new"


def test_dest_a_file_exits_2_with_a_one_line_reason(tmp_path, capsys):
    (tmp_path / "file").write_text("keep me")
    log = tmp_path / "termination-log"
    code = fetch_cli.main(
        [
            *("--source", "http://127.0.0.1:9/devstoreaccount1/models/x"),
            *("--dest", str(tmp_path / "file"), "--termination-log", str(log)),
        ]
    )
    assert code == 2
    assert log.read_text() == f"--dest {tmp_path / 'file'} exists and is not a folder\n"
    assert "Traceback" not in capsys.readouterr().err
    assert (tmp_path / "file").read_text() == "keep me"


def test_a_download_is_cut_off_past_its_listed_size_and_hashed_on_the_way():
    written = []
    sink = fetch.CheckedSink("model.pkl", 5, written.append)
    assert sink.write(b"abc") == 3
    with pytest.raises(fetch.DigestMismatchError, match=r"model\.pkl is larger than the 5 bytes"):
        sink.write(b"def")
    assert written == [b"abc"]
    unlimited = fetch.CheckedSink("model.pkl", None, written.append)
    unlimited.write(b"x" * 10)
    assert unlimited.sha256.hexdigest() == hashlib.sha256(b"x" * 10).hexdigest()


def test_the_size_limit_is_a_positive_whole_number_of_bytes():
    assert fetch.parse_max_bytes(None) is None
    assert fetch.parse_max_bytes(" 1073741824 ") == 1 << 30
    for argument in ("0", "-1", "+5", "1Gi", "1e9", "1_000", "", "\u0661"):
        with pytest.raises(fetch.SizeLimitError, match="positive whole number of bytes"):
            fetch.parse_max_bytes(argument)


def test_listed_sizes_leave_a_budget_for_unsized_files_or_refuse_the_bundle():
    names = list(MANIFEST["files"])
    assert fetch.unlisted_budget(MANIFEST, names, 5, None) is None
    assert fetch.unlisted_budget(MANIFEST, names, 5, 35) == 0
    assert fetch.unlisted_budget(MANIFEST, names, 5, 100) == 65
    with pytest.raises(
        fetch.BundleTooLargeError,
        match=r"^flags\.pkl takes the bundle past its size limit of 34 bytes "
        r"\(35 bytes as bundle\.json lists them\)$",
    ):
        fetch.unlisted_budget(MANIFEST, names, 5, 34)
    unsized = {"files": {**MANIFEST["files"], "model.onnx": {"sha256": "d" * 64}}}
    assert fetch.unlisted_budget(unsized, [*names, "model.onnx"], 5, 40) == 5


def test_a_download_past_the_size_limit_raises_what_it_is_told():
    sink = fetch.CheckedSink(
        "model.onnx", 4, [].append, lambda: fetch.BundleTooLargeError("model.onnx", 9, "cut off")
    )
    sink.write(b"abcd")
    with pytest.raises(fetch.BundleTooLargeError, match="size limit of 9 bytes"):
        sink.write(b"e")


def test_folders_an_interrupted_fetch_left_are_cleared_and_nothing_else(tmp_path):
    staging = tmp_path / ".bundle.fetching-x1"
    (staging / "sub").mkdir(parents=True)
    (staging / "sub" / "model.pkl").write_bytes(b"half")
    retired = tmp_path / ".bundle.replaced-x2" / "bundle"
    retired.mkdir(parents=True)
    (retired / "bundle.json").write_text("{}")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("keep")
    (tmp_path / ".bundle.fetching-link").symlink_to(victim)
    (tmp_path / ".bundle.fetching-file").write_text("a file, not ours")
    (tmp_path / ".other.fetching-x3").mkdir()
    removed = fetch.clear_leftovers(tmp_path / "bundle")
    assert removed == [".bundle.fetching-x1", ".bundle.replaced-x2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".bundle.fetching-file",
        ".bundle.fetching-link",
        ".other.fetching-x3",
        "victim",
    ]
    assert (victim / "keep").read_text() == "keep"
    assert fetch.clear_leftovers(tmp_path / "absent" / "bundle") == []
