"""Operator settings: flags win over environment variables, which win over defaults."""

import pytest

from batcomputer_operator.config import DEFAULT_SERVER_IMAGE, OperatorConfig, load_config


def test_defaults_watch_every_namespace():
    config = load_config([], {})
    assert config == OperatorConfig()
    assert (
        config.server_image
        == DEFAULT_SERVER_IMAGE
        == "ghcr.io/batcomputer/batcomputer-server:0.1.0"
    )
    assert config.namespaces == ()
    assert config.liveness_endpoint == "http://0.0.0.0:8080/healthz"


def test_environment_configures():
    env = {
        "BATCOMPUTER_SERVER_IMAGE": "registry.local/server:9",
        "BATCOMPUTER_NAMESPACES": "models, staging",
        "BATCOMPUTER_INGRESS_CLASS": "nginx",
        "BATCOMPUTER_INGRESS_HOST": "models.local",
        "BATCOMPUTER_LIVENESS_PORT": "9090",
        "BATCOMPUTER_PROGRESS_DEADLINE_SECONDS": "120",
    }
    config = load_config([], env)
    assert config.server_image == "registry.local/server:9"
    assert config.namespaces == ("models", "staging")
    assert (config.ingress_class, config.ingress_host) == ("nginx", "models.local")
    assert config.liveness_endpoint == "http://0.0.0.0:9090/healthz"
    assert config.progress_deadline_seconds == 120


def test_flags_override_environment():
    env = {"BATCOMPUTER_SERVER_IMAGE": "a:1", "BATCOMPUTER_NAMESPACES": "models"}
    config = load_config(["--server-image", "b:2", "-n", "one", "--namespace", "two"], env)
    assert config.server_image == "b:2"
    assert config.namespaces == ("one", "two")


def test_unpinned_bundles_are_served_unless_the_operator_is_told_to_refuse_them():
    assert load_config([], {}).require_pinned_bundles is False
    env = {"BATCOMPUTER_REQUIRE_PINNED_BUNDLES": "true"}
    assert load_config([], env).require_pinned_bundles is True
    assert load_config(["--no-require-pinned-bundles"], env).require_pinned_bundles is False
    assert load_config(["--require-pinned-bundles"], {}).require_pinned_bundles is True
    off = {"BATCOMPUTER_REQUIRE_PINNED_BUNDLES": "0"}
    assert load_config([], off).require_pinned_bundles is False


def test_a_misspelt_require_pinned_bundles_is_refused_not_read_as_false(capsys):
    with pytest.raises(SystemExit) as exited:
        load_config([], {"BATCOMPUTER_REQUIRE_PINNED_BUNDLES": "ture"})
    assert exited.value.code == 2
    assert "'ture' is not a boolean (true or false)" in capsys.readouterr().err


def test_the_bundle_size_limit_is_a_binary_quantity_from_flag_or_environment():
    assert load_config([], {}).bundle_size_limit == 1 << 30
    env = {"BATCOMPUTER_BUNDLE_SIZE_LIMIT": "512Mi"}
    assert load_config([], env).bundle_size_limit == 512 << 20
    assert load_config(["--bundle-size-limit", "2Ti"], env).bundle_size_limit == 2 << 40
    assert load_config(["--bundle-size-limit", "1536Ki"], {}).bundle_size_limit == 1536 << 10
    assert load_config([], {"BATCOMPUTER_BUNDLE_SIZE_LIMIT": ""}).bundle_size_limit == 1 << 30


@pytest.mark.parametrize(
    "quantity", ["1G", "1gi", "0Gi", "01Gi", "-1Gi", "1.5Gi", "1073741824", "Gi", "1 Gi", "lots"]
)
def test_a_bundle_size_limit_that_is_not_a_binary_quantity_is_refused(quantity, capsys):
    for argv, env in (
        ([f"--bundle-size-limit={quantity}"], {}),
        ([], {"BATCOMPUTER_BUNDLE_SIZE_LIMIT": quantity}),
    ):
        with pytest.raises(SystemExit) as exited:
            load_config(argv, env)
        assert exited.value.code == 2
        assert f"{quantity!r} is not a size in Ki, Mi, Gi, Ti, Pi or Ei" in capsys.readouterr().err
