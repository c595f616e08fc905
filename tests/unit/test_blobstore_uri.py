"""blob_uri: folder URIs, credentials from the environment, the retry schedule; no network."""

import pytest

from batcomputer_bundle.blob_uri import (
    EMULATOR_ACCOUNT_KEY,
    BlobUriError,
    RetryPolicySettings,
    credential_for,
    mask_secrets,
    parse_folder_uri,
)

AZURE_URI = "https://acct1.blob.core.windows.net/models/crime/1.4.2"
EMULATOR_URI = "http://10.244.0.1:10000/devstoreaccount1/models/crime/1.4.2"


def test_azure_uri_names_account_container_and_prefix():
    folder = parse_folder_uri(AZURE_URI)
    assert (folder.account_url, folder.account) == ("https://acct1.blob.core.windows.net", "acct1")
    assert (folder.container, folder.prefix, folder.sas) == ("models", "crime/1.4.2", None)
    assert folder.blob_name("model.pkl") == "crime/1.4.2/model.pkl"


def test_path_style_emulator_uri_keeps_host_and_port():
    folder = parse_folder_uri(EMULATOR_URI + "/")
    assert folder.account_url == "http://10.244.0.1:10000/devstoreaccount1"
    assert (folder.account, folder.container, folder.prefix) == (
        "devstoreaccount1",
        "models",
        "crime/1.4.2",
    )


def test_container_root_has_an_empty_prefix_and_children_join_with_slashes():
    folder = parse_folder_uri("http://127.0.0.1:10000/devstoreaccount1/models")
    assert folder.prefix == ""
    assert folder.blob_name("bundle.json") == "bundle.json"
    assert folder.child("titanic", "1.0.0").blob_name("bundle.json") == "titanic/1.0.0/bundle.json"


def test_sas_in_the_query_is_kept_but_never_displayed():
    folder = parse_folder_uri(AZURE_URI + "?sv=2025-01-05&sr=c&sp=rl&sig=c2VjcmV0%3D")
    assert folder.sas == "sv=2025-01-05&sr=c&sp=rl&sig=c2VjcmV0%3D"
    assert folder.display("model.pkl") == AZURE_URI + "/model.pkl"
    assert "sig" not in repr(folder)


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("ftp://acct1.blob.core.windows.net/models/x", "must start with https://"),
        ("models/crime/1.0.0", "must start with https://"),
        ("https://acct1.blob.core.windows.net/", "names no container"),
        ("http://127.0.0.1:10000/", "needs /<account>/<container>"),
        ("http://127.0.0.1:10000/devstoreaccount1", "names no container"),
        ("https://ACCT_1.blob.core.windows.net/models", "3-24 lowercase letters and digits"),
        ("https://acct1.blob.core.windows.net/Models/x", "3-63 lowercase letters"),
        ("https://acct1.blob.core.windows.net/ab/x", "3-63 lowercase letters"),
        ("https://acct1.blob.core.windows.net/models/../x", "'..'"),
        ("https://user:pw@acct1.blob.core.windows.net/models/x", "user:password@"),
    ],
)
def test_bad_uris_are_refused_with_the_part_and_the_rule(uri, message):
    with pytest.raises(BlobUriError, match=message):
        parse_folder_uri(uri)


def test_connection_string_supplies_only_the_credential_not_the_host():
    folder = parse_folder_uri(EMULATOR_URI)
    environ = {"AZURE_STORAGE_CONNECTION_STRING": "UseDevelopmentStorage=true"}
    assert credential_for(folder, environ) == {
        "account_name": "devstoreaccount1",
        "account_key": EMULATOR_ACCOUNT_KEY,
    }
    assert folder.account_url.startswith("http://10.244.0.1:10000/")


def test_connection_string_for_another_account_is_refused_by_name():
    environ = {"AZURE_STORAGE_CONNECTION_STRING": "AccountName=other;AccountKey=a2V5"}
    with pytest.raises(BlobUriError, match=r"account 'other'.*account 'acct1'"):
        credential_for(parse_folder_uri(AZURE_URI), environ)


def test_connection_string_sas_wins_and_a_key_without_account_is_refused():
    folder = parse_folder_uri(AZURE_URI)
    connection_string = "BlobEndpoint=x;SharedAccessSignature=?sv=1&sig=z"
    with_sas = {"AZURE_STORAGE_CONNECTION_STRING": connection_string}
    assert credential_for(folder, with_sas) == "sv=1&sig=z"
    with pytest.raises(BlobUriError, match="needs AccountName and AccountKey"):
        credential_for(folder, {"AZURE_STORAGE_CONNECTION_STRING": "AccountKey=a2V5"})
    with pytest.raises(BlobUriError, match="Key=Value"):
        credential_for(folder, {"AZURE_STORAGE_CONNECTION_STRING": "not a connection string"})


def test_credential_precedence_env_sas_then_uri_sas_then_anonymous():
    with_sas = parse_folder_uri(AZURE_URI + "?sv=1&sig=fromuri")
    assert credential_for(with_sas, {"AZURE_STORAGE_SAS_TOKEN": "?sv=1&sig=fromenv"}) == (
        "sv=1&sig=fromenv"
    )
    assert credential_for(with_sas, {}) == "sv=1&sig=fromuri"
    assert credential_for(parse_folder_uri(AZURE_URI), {}) is None


def test_secrets_are_masked_in_messages():
    text = (
        "GET /c/b?sv=1&sig=abc%2Fdef&sp=r failed; "
        "AccountName=a;AccountKey=c2VjcmV0==;SharedAccessSignature=sv=1"
    )
    masked = mask_secrets(text)
    assert "abc" not in masked and "c2VjcmV0" not in masked
    assert "sig=***" in masked and "AccountKey=***" in masked and "sv=1&" in masked


def test_retry_back_off_doubles_up_to_its_cap_and_fits_the_window():
    settings = RetryPolicySettings(retry_window_seconds=30, backoff_factor=1, backoff_max=8)
    assert [settings.backoff(n) for n in range(1, 7)] == [1, 2, 4, 8, 8, 8]
    # 1 + 2 + 4 + 8 + 8 = 23 s fits in 30 s; one more 8 s wait would not.
    assert settings.retry_total() == 5
    assert RetryPolicySettings(retry_window_seconds=0.5).retry_total() == 0
