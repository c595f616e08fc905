"""Operator settings: flags win over environment variables, which win over defaults."""

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
