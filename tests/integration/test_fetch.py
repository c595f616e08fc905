"""batcomputer-fetch as the init container runs it, against a real Azurite."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient

from batcomputer_bundle import bundle
from batcomputer_bundle.blob_uri import EMULATOR_ACCOUNT_KEY
from batcomputer_dev.azurite import connection_string, free_port, start_azurite, stop_azurite
from batcomputer_dev.pytest_azurite import credentials_environment

FETCH = str(Path(sys.executable).parent / "batcomputer-fetch")
VERSION_PREFIX = "titanic/1.0.0"


def _fetch(
    source: str, dest: Path, *extra: str, timeout: float = 120, **credentials: str
) -> tuple[subprocess.CompletedProcess[str], str]:
    log = dest.parent / f"{dest.name}.termination-log"
    result = subprocess.run(
        [FETCH, "--source", source, "--dest", str(dest), "--termination-log", str(log), *extra],
        env=credentials_environment(**credentials),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return result, log.read_text().strip() if log.exists() else ""


@pytest.fixture(scope="module")
def titanic(trained_bundles) -> Path:
    return Path(trained_bundles["titanic"])


@pytest.fixture(scope="module")
def container(azurite, titanic) -> str:
    """A container holding the trained titanic bundle under titanic/1.0.0."""
    name = azurite.make_container("fetch")
    azurite.upload_folder(titanic, name, VERSION_PREFIX)
    return name


def _doctored_copy(azurite, titanic: Path, tmp_path: Path, change) -> str:
    """Upload a copy of the bundle with one thing changed; return its folder URI."""
    copy = tmp_path / "doctored"
    shutil.copytree(titanic, copy)
    change(copy)
    container = azurite.make_container("doctored")
    azurite.upload_folder(copy, container, VERSION_PREFIX)
    return azurite.folder_uri(container, VERSION_PREFIX)


def test_fetch_writes_every_file_verified_and_leaves_no_partial_files(
    azurite, container, titanic, tmp_path
):
    dest = tmp_path / "bundle"
    source = azurite.folder_uri(container, VERSION_PREFIX)
    result, message = _fetch(
        source, dest, AZURE_STORAGE_CONNECTION_STRING=azurite.connection_string
    )
    assert result.returncode == 0, result.stderr
    manifest = bundle.verify_folder(dest)
    assert (manifest["name"], manifest["version"]) == ("titanic", "1.0.0")
    assert sorted(p.name for p in dest.iterdir()) == sorted(p.name for p in titanic.iterdir())
    for name in manifest["files"]:
        assert bundle.sha256_file(dest / name) == bundle.sha256_file(titanic / name)
    assert not list(dest.glob("*.partial"))
    digest = bundle.bundle_digest((titanic / "bundle.json").read_bytes())
    assert message.startswith(
        f"fetched titanic 1.0.0 ({digest}): {len(manifest['files'])} files verified"
    )
    assert "no --digest given" in result.stderr


@pytest.mark.parametrize("way", ["dev-storage", "env-sas", "uri-sas"])
def test_every_credential_source_reaches_the_uri_host(azurite, container, tmp_path, way):
    source = azurite.folder_uri(container, VERSION_PREFIX)
    sas = azurite.sas_token(container)
    credentials = {
        # The emulator shorthand names 127.0.0.1:10000; the URI's port must win.
        "dev-storage": {"AZURE_STORAGE_CONNECTION_STRING": "UseDevelopmentStorage=true"},
        "env-sas": {"AZURE_STORAGE_SAS_TOKEN": "?" + sas},
        "uri-sas": {},
    }[way]
    if way == "uri-sas":
        source += "?" + sas
    result, message = _fetch(source, tmp_path / "bundle", **credentials)
    assert result.returncode == 0, result.stderr
    assert message.startswith("fetched titanic 1.0.0")
    assert sas.split("sig=")[1] not in result.stderr


def test_missing_version_exits_3_naming_the_manifest_blob(azurite, container, tmp_path):
    source = azurite.folder_uri(container, "titanic/9.9.9")
    result, message = _fetch(
        source, tmp_path / "bundle", AZURE_STORAGE_CONNECTION_STRING=azurite.connection_string
    )
    assert result.returncode == 3
    assert message == f"blob not found: {source}/bundle.json"
    assert message in result.stderr


def test_missing_file_exits_3_naming_it_and_leaves_no_manifest(azurite, titanic, tmp_path):
    source = _doctored_copy(azurite, titanic, tmp_path, lambda d: (d / "lookup.pkl").unlink())
    dest = tmp_path / "bundle"
    result, message = _fetch(
        source, dest, AZURE_STORAGE_CONNECTION_STRING=azurite.connection_string
    )
    assert result.returncode == 3
    assert message == f"blob not found: {source}/lookup.pkl"
    assert not (dest / "bundle.json").exists()


def test_wrong_account_key_exits_4(azurite, container, tmp_path):
    wrong_key = EMULATOR_ACCOUNT_KEY[:-8] + "AAAAAA=="
    wrong = connection_string(azurite.process.host, azurite.process.port).replace(
        EMULATOR_ACCOUNT_KEY, wrong_key
    )
    result, message = _fetch(
        azurite.folder_uri(container, VERSION_PREFIX),
        tmp_path / "bundle",
        AZURE_STORAGE_CONNECTION_STRING=wrong,
    )
    assert result.returncode == 4
    assert message.startswith("authentication failed")
    assert wrong_key not in result.stderr + message


def test_tampered_sas_exits_4_without_echoing_the_signature(azurite, container, tmp_path):
    sas = azurite.sas_token(container)
    signature = sas.split("sig=")[1]
    tampered = sas.replace("sig=", "sig=AA")
    source = azurite.folder_uri(container, VERSION_PREFIX) + "?" + tampered
    result, message = _fetch(source, tmp_path / "bundle")
    assert result.returncode == 4
    assert message.startswith("authentication failed")
    assert signature not in result.stderr + message


def test_anonymous_access_to_a_private_container_exits_4(azurite, container, tmp_path):
    result, message = _fetch(azurite.folder_uri(container, VERSION_PREFIX), tmp_path / "bundle")
    assert result.returncode == 4
    assert message.startswith("authentication failed: no credentials given")


def _tamper_model(folder: Path) -> None:
    model = folder / "model.pkl"
    model.write_bytes(model.read_bytes()[:-1] + b"\x00")


def test_tampered_file_exits_5_and_is_never_written(azurite, container, titanic, tmp_path):
    dest = tmp_path / "bundle"
    earlier, _ = _fetch(
        azurite.folder_uri(container, VERSION_PREFIX),
        dest,
        AZURE_STORAGE_CONNECTION_STRING=azurite.connection_string,
    )
    assert earlier.returncode == 0
    before = {p.name: p.read_bytes() for p in dest.iterdir()}
    source = _doctored_copy(azurite, titanic, tmp_path, _tamper_model)
    result, message = _fetch(
        source, dest, AZURE_STORAGE_CONNECTION_STRING=azurite.connection_string
    )
    assert result.returncode == 5
    assert message == "sha256 mismatch for model.pkl"
    # The destination keeps the earlier bundle whole; nothing of the tampered one lands.
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == before
    assert not list(tmp_path.glob(".bundle.*"))


@pytest.mark.parametrize(
    ("pin", "reason"),
    [
        ("model.pkl=" + "0" * 64, "sha256 mismatch for model.pkl"),
        ("weights.bin=" + "0" * 64, "pinned file weights.bin is not part of the bundle"),
    ],
)
def test_pin_that_the_bundle_cannot_satisfy_exits_5(azurite, container, tmp_path, pin, reason):
    result, message = _fetch(
        azurite.folder_uri(container, VERSION_PREFIX),
        tmp_path / "bundle",
        "--sha256",
        pin,
        AZURE_STORAGE_CONNECTION_STRING=azurite.connection_string,
    )
    assert result.returncode == 5
    assert message.startswith(reason)


def test_right_pins_pass(azurite, container, titanic, tmp_path):
    pins = [f"--sha256={name}={bundle.sha256_file(titanic / name)}" for name in bundle.PICKLE_FILES]
    result, _ = _fetch(
        azurite.folder_uri(container, VERSION_PREFIX),
        tmp_path / "bundle",
        *pins,
        AZURE_STORAGE_CONNECTION_STRING=azurite.connection_string,
    )
    assert result.returncode == 0, result.stderr


def test_manifest_that_is_not_a_bundle_exits_7(azurite, titanic, tmp_path):
    source = _doctored_copy(
        azurite, titanic, tmp_path, lambda d: (d / "bundle.json").write_text('{"format": "x"}')
    )
    result, message = _fetch(
        source, tmp_path / "bundle", AZURE_STORAGE_CONNECTION_STRING=azurite.connection_string
    )
    assert result.returncode == 7
    assert "bundle.json has format 'x'" in message


def test_storage_that_stays_down_exits_6_after_the_bounded_retries(tmp_path):
    port = free_port()
    source = f"http://127.0.0.1:{port}/devstoreaccount1/models/{VERSION_PREFIX}"
    started = time.monotonic()
    # Back-offs 1 s + 2 s fit a 4 s window, the next 4 s would not: 3 attempts.
    result, message = _fetch(
        source,
        tmp_path / "bundle",
        "--timeout",
        "4",
        timeout=60,
        AZURE_STORAGE_CONNECTION_STRING=connection_string("127.0.0.1", port),
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 6
    assert message.startswith("storage unreachable after 3 attempts")
    assert "Connection refused" in message
    print(f"unreachable storage: exit 6 after {elapsed:.1f} s (--timeout 4)")


def test_storage_down_then_up_within_the_retry_window_succeeds(titanic, tmp_path):
    port = free_port()
    location = tmp_path / "azurite"
    emulator = start_azurite("127.0.0.1", port, location)
    credentials = connection_string("127.0.0.1", port)
    try:
        client = BlobServiceClient.from_connection_string(credentials).create_container("models")
        for path in titanic.iterdir():
            client.upload_blob(f"{VERSION_PREFIX}/{path.name}", path.read_bytes())
    finally:
        stop_azurite(emulator)
    source = f"http://127.0.0.1:{port}/devstoreaccount1/models/{VERSION_PREFIX}"
    log = tmp_path / "termination-log"
    command = [FETCH, "--source", source, "--dest", str(tmp_path / "bundle")]
    command += ["--timeout", "60", "--termination-log", str(log)]
    started = time.monotonic()
    fetcher = subprocess.Popen(
        command,
        env=credentials_environment(AZURE_STORAGE_CONNECTION_STRING=credentials),
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(4)
    assert fetcher.poll() is None, "the fetcher gave up while storage was down"
    emulator = start_azurite("127.0.0.1", port, location)
    try:
        _, stderr = fetcher.communicate(timeout=60)
        elapsed = time.monotonic() - started
    finally:
        stop_azurite(emulator)
    assert fetcher.returncode == 0, stderr
    assert log.read_text().startswith("fetched titanic 1.0.0")
    bundle.verify_folder(tmp_path / "bundle")
    print(f"storage down 4 s then up: fetched after {elapsed:.1f} s")


def _connected(azurite) -> dict[str, str]:
    return {"AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string}


def _digest_of(folder: Path) -> str:
    return bundle.bundle_digest((folder / "bundle.json").read_bytes())


def test_the_right_bundle_digest_passes_and_every_file_is_verified(
    azurite, container, titanic, tmp_path
):
    dest = tmp_path / "bundle"
    digest = _digest_of(titanic)
    result, _ = _fetch(
        azurite.folder_uri(container, VERSION_PREFIX),
        dest,
        *("--digest", digest),
        **_connected(azurite),
    )
    assert result.returncode == 0, result.stderr
    assert f"bundle.json matches the bundle digest {digest}" in result.stderr
    assert bundle.verify_folder(dest, digest=digest)["name"] == "titanic"
    assert (dest / "model.onnx").read_bytes() == (titanic / "model.onnx").read_bytes()


def _rewrite_manifest(folder: Path, change) -> None:
    manifest = json.loads((folder / "bundle.json").read_text())
    change(manifest)
    (folder / "bundle.json").write_text(json.dumps(manifest))


def _swap_onnx_consistently(folder: Path) -> None:
    """The attack per-file pins let through: another model.onnx and bundle.json vouching for it."""
    (folder / "model.onnx").write_bytes(b"not the trained model")

    def change(manifest):
        manifest["files"]["model.onnx"] = bundle.describe_files(folder, ["model.onnx"])[
            "model.onnx"
        ]
        manifest["self_check"]["probabilities"] = [
            list(reversed(row)) for row in manifest["self_check"]["probabilities"]
        ]

    _rewrite_manifest(folder, change)


@pytest.mark.parametrize(
    "change",
    [_swap_onnx_consistently, lambda d: _rewrite_manifest(d, lambda m: m.update(version="6.6.6"))],
    ids=["model.onnx-and-bundle.json", "bundle.json-only"],
)
def test_a_rewritten_bundle_json_fails_the_digest_before_any_file_is_read(
    azurite, titanic, tmp_path, change
):
    pickle_pins = [f"--sha256={n}={bundle.sha256_file(titanic / n)}" for n in bundle.PICKLE_FILES]
    source = _doctored_copy(azurite, titanic, tmp_path, change)
    dest = tmp_path / "bundle"
    unpinned, _ = _fetch(source, tmp_path / "unpinned", *pickle_pins, **_connected(azurite))
    assert unpinned.returncode == 0, "per-file pins alone cannot see this change"
    result, message = _fetch(
        source, dest, "--digest", _digest_of(titanic), *pickle_pins, **_connected(azurite)
    )
    assert result.returncode == 5, result.stderr
    assert message.startswith("sha256 mismatch for bundle.json: the bundle digest is sha256:")
    assert "model.pkl" not in result.stderr  # refused before any file was downloaded
    assert not dest.exists()
    assert not list(tmp_path.glob(".bundle.*"))


def _replace_manifest_text(text: str | bytes):
    def change(folder: Path) -> None:
        data = text.encode() if isinstance(text, str) else text
        (folder / "bundle.json").write_bytes(data)

    return change


def _with_files(files) -> object:
    return lambda folder: _rewrite_manifest(folder, lambda m: m.update(files=files))


def _listing(name: str):
    def change(folder: Path) -> None:
        _rewrite_manifest(folder, lambda m: m["files"].update({name: {"sha256": "0" * 64}}))

    return change


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (_replace_manifest_text("this is not json"), "bundle.json is not valid JSON"),
        (_replace_manifest_text(b"\xff\xfe\x00"), "bundle.json is not valid JSON"),
        (_replace_manifest_text("[" * 50_000 + "]" * 50_000), "bundle.json is nested too deeply"),
        (_replace_manifest_text('"just a string"'), "bundle.json must hold a JSON object"),
        (_with_files(["model.pkl"]), "bundle.json: files must be an object"),
        (_with_files({"model.pkl": None}), "bundle.json gives no valid sha256 for model.pkl"),
        (
            lambda d: _rewrite_manifest(d, lambda m: m.update(name=None)),
            "bundle.json: name must be a string",
        ),
        (_listing(""), "bundle.json lists '', which is not a bundle file"),
        (_listing("model.pkl\x00"), "bundle.json lists 'model.pkl\\x00', which is not a bundle"),
        (_listing("../../etc/cron.d/x"), "bundle.json lists '../../etc/cron.d/x', which is not"),
        (_listing("sub/model.pkl"), "bundle.json lists 'sub/model.pkl', which is not a bundle"),
        (_listing(".."), "bundle.json lists '..', which is not a bundle file"),
        (_listing("line\nbreak"), "bundle.json lists 'line\\nbreak', which is not a bundle"),
    ],
    ids=[
        "not-json",
        "not-utf8",
        "deep-nesting",
        "not-an-object",
        "files-a-list",
        "entry-null",
        "name-null",
        "empty-name",
        "nul-in-name",
        "dot-dot-path",
        "separator",
        "dot-dot",
        "newline",
    ],
)
def test_every_malformed_manifest_exits_7_with_one_line_and_no_traceback(
    azurite, titanic, tmp_path, change, reason
):
    source = _doctored_copy(azurite, titanic, tmp_path, change)
    dest = tmp_path / "bundle"
    result, message = _fetch(source, dest, **_connected(azurite))
    assert result.returncode == 7, result.stderr
    assert message.startswith(reason)
    assert "\n" not in message and "Traceback" not in result.stderr
    assert not dest.exists()


def test_an_oversized_manifest_exits_7_without_being_read_whole(azurite, titanic, tmp_path):
    big = b"{" + b" " * (bundle.MAX_MANIFEST_BYTES + 1) + b"}"
    source = _doctored_copy(azurite, titanic, tmp_path, _replace_manifest_text(big))
    result, message = _fetch(source, tmp_path / "bundle", **_connected(azurite))
    assert result.returncode == 7, result.stderr
    assert message == f"bundle.json exceeds {bundle.MAX_MANIFEST_BYTES} bytes"


def test_a_blob_larger_than_listed_is_cut_off_and_exits_5(azurite, titanic, tmp_path):
    def grow(folder: Path) -> None:
        with (folder / "flags.pkl").open("ab") as stream:
            stream.write(b"\0" * (1 << 20))

    source = _doctored_copy(azurite, titanic, tmp_path, grow)
    result, message = _fetch(source, tmp_path / "bundle", **_connected(azurite))
    listed = bundle.read_manifest(titanic)["files"]["flags.pkl"]["bytes"]
    assert result.returncode == 5, result.stderr
    assert message == f"flags.pkl is larger than the {listed} bytes expected"


def test_blobs_bundle_json_does_not_list_are_never_fetched(azurite, titanic, tmp_path):
    def plant(folder: Path) -> None:
        (folder / "evil.pkl").write_bytes(b"cos\nsystem\n")

    source = _doctored_copy(azurite, titanic, tmp_path, plant)
    dest = tmp_path / "bundle"
    result, _ = _fetch(source, dest, "--digest", _digest_of(titanic), **_connected(azurite))
    assert result.returncode == 0, result.stderr
    assert not (dest / "evil.pkl").exists()


def test_dest_a_symlink_exits_2_and_writes_nothing_through_it(azurite, container, tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / "bundle").symlink_to(target)
    result, message = _fetch(
        azurite.folder_uri(container, VERSION_PREFIX), tmp_path / "bundle", **_connected(azurite)
    )
    assert result.returncode == 2, result.stderr
    assert message == f"--dest {tmp_path / 'bundle'} is a symlink; the fetcher never follows one"
    assert list(target.iterdir()) == []


def test_a_symlink_planted_in_dest_is_never_written_through(azurite, container, tmp_path):
    dest = tmp_path / "bundle"
    dest.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    (dest / "model.pkl").symlink_to(victim)
    result, message = _fetch(
        azurite.folder_uri(container, VERSION_PREFIX), dest, **_connected(azurite)
    )
    assert result.returncode == 2, result.stderr
    assert "holds files that are not a bundle's" in message
    assert victim.read_text() == "untouched"
    assert (dest / "model.pkl").is_symlink()
    assert not list(tmp_path.glob(".bundle.*"))


def test_an_earlier_bundle_in_dest_is_replaced_whole(azurite, container, titanic, tmp_path):
    dest = tmp_path / "bundle"
    dest.mkdir()
    for name in ("model.pkl", "model.onnx", "bundle.json"):
        (dest / name).write_bytes(b"an earlier fetch")
    result, _ = _fetch(
        azurite.folder_uri(container, VERSION_PREFIX),
        dest,
        *("--digest", _digest_of(titanic)),
        **_connected(azurite),
    )
    assert result.returncode == 0, result.stderr
    bundle.verify_folder(dest, digest=_digest_of(titanic))
    assert sorted(p.name for p in dest.iterdir()) == sorted(p.name for p in titanic.iterdir())
    assert not list(tmp_path.glob(".bundle.*"))


def test_a_killed_fetchs_leftovers_are_cleared_by_the_next(azurite, container, tmp_path):
    leftover = tmp_path / ".bundle.fetching-killed"
    leftover.mkdir()
    (leftover / "model.pkl").write_bytes(b"half a download")
    result, _ = _fetch(
        azurite.folder_uri(container, VERSION_PREFIX), tmp_path / "bundle", **_connected(azurite)
    )
    assert result.returncode == 0, result.stderr
    assert "removed .bundle.fetching-killed, left by an interrupted fetch" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def _bundle_bytes(folder: Path) -> int:
    """What the whole bundle holds: every file it lists plus bundle.json."""
    return sum(path.stat().st_size for path in folder.iterdir())


def _assert_nothing_left(result, tmp_path: Path) -> None:
    assert not (tmp_path / "bundle").exists()
    assert not list(tmp_path.glob(".bundle.*"))
    assert ", sha256 " not in result.stderr  # not one file was downloaded


def test_a_bundle_exactly_at_the_size_limit_passes(azurite, container, titanic, tmp_path):
    dest = tmp_path / "bundle"
    limit = _bundle_bytes(titanic)
    result, _ = _fetch(
        azurite.folder_uri(container, VERSION_PREFIX),
        dest,
        *("--max-bytes", str(limit)),
        **_connected(azurite),
    )
    assert result.returncode == 0, result.stderr
    assert _bundle_bytes(dest) == limit


def test_listed_sizes_over_the_limit_exit_7_before_any_download(
    azurite, container, titanic, tmp_path
):
    limit = _bundle_bytes(titanic) - 1
    result, message = _fetch(
        azurite.folder_uri(container, VERSION_PREFIX),
        tmp_path / "bundle",
        *("--max-bytes", str(limit)),
        **_connected(azurite),
    )
    assert result.returncode == 7, result.stderr
    last = list(bundle.read_manifest(titanic)["files"])[-1]
    assert message == (
        f"{last} takes the bundle past its size limit of {limit} bytes "
        f"({limit + 1} bytes as bundle.json lists them)"
    )
    assert result.stderr.strip().splitlines()[-1] == f"batcomputer-fetch: {message}"
    _assert_nothing_left(result, tmp_path)


def test_a_bundle_json_larger_than_the_limit_is_cut_off_and_exits_7(
    azurite, container, titanic, tmp_path
):
    limit = (titanic / "bundle.json").stat().st_size - 1
    result, message = _fetch(
        azurite.folder_uri(container, VERSION_PREFIX),
        tmp_path / "bundle",
        *("--max-bytes", str(limit)),
        **_connected(azurite),
    )
    assert result.returncode == 7, result.stderr
    assert message == (
        f"bundle.json takes the bundle past its size limit of {limit} bytes (cut off mid-download)"
    )
    _assert_nothing_left(result, tmp_path)


HUGE = 8 << 20


def _huge_unsized_flags(folder: Path) -> None:
    """flags.pkl grown by 8 MiB, bundle.json vouching for its digest but giving no size."""
    with (folder / "flags.pkl").open("ab") as stream:
        stream.write(b"\0" * HUGE)
    digest = bundle.sha256_file(folder / "flags.pkl")
    _rewrite_manifest(folder, lambda m: m["files"].update({"flags.pkl": {"sha256": digest}}))


def test_a_file_of_no_listed_size_is_cut_off_once_the_bundle_passes_the_limit(
    azurite, titanic, tmp_path
):
    source = _doctored_copy(azurite, titanic, tmp_path, _huge_unsized_flags)
    whole = _bundle_bytes(tmp_path / "doctored")
    unlimited, _ = _fetch(source, tmp_path / "unlimited", **_connected(azurite))
    assert unlimited.returncode == 0, "the bundle is valid; only its size is refused"
    roomy, _ = _fetch(source, tmp_path / "roomy", "--max-bytes", str(whole), **_connected(azurite))
    assert roomy.returncode == 0, roomy.stderr

    limit = whole - HUGE // 2
    result, message = _fetch(
        source, tmp_path / "bundle", "--max-bytes", str(limit), **_connected(azurite)
    )
    assert result.returncode == 7, result.stderr
    assert message == (
        f"flags.pkl takes the bundle past its size limit of {limit} bytes "
        "(it lists no size for it; cut off mid-download)"
    )
    assert "flags.pkl:" not in result.stderr
    assert not (tmp_path / "bundle").exists()
    assert not list(tmp_path.glob(".bundle.*"))


@pytest.mark.parametrize("argument", ["0", "-1", "-0", "abc", "1Gi", "1e9", "1.5", "", "١٢"])
def test_a_size_limit_that_is_not_a_positive_number_of_bytes_exits_2(
    azurite, container, tmp_path, argument
):
    result, message = _fetch(
        azurite.folder_uri(container, VERSION_PREFIX),
        tmp_path / "bundle",
        f"--max-bytes={argument}",
        **_connected(azurite),
    )
    assert result.returncode == 2, result.stderr
    assert message.startswith("--max-bytes must be a positive whole number of bytes, got ")
    assert "fetching" not in result.stderr
    assert not (tmp_path / "bundle").exists()
