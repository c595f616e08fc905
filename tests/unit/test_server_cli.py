"""batcomputer-server's options: defaults from the design, bounds, and where it writes."""

import socket

import pytest

from batcomputer_server import server_cli, worker


def test_defaults_follow_the_design(monkeypatch):
    monkeypatch.delenv("BATCOMPUTER_ROOT_PATH", raising=False)
    options = server_cli._parser().parse_args(["--bundle", "/models/crime/1.0.0"])
    settings = server_cli._gunicorn_options(options)
    assert settings["bind"] == "0.0.0.0:8000"
    assert settings["workers"] == 2
    # gevent: a slow or idle client costs a socket, not a worker
    assert issubclass(settings["worker_class"], worker.Worker)
    assert settings["worker_class"].limits == worker.ClientLimits(
        idle_seconds=5.0, header_seconds=10.0, body_seconds=30.0, max_body_bytes=2 * 1024 * 1024
    )
    assert settings["worker_connections"] == 4096
    assert settings["http_parser"] == "python"  # the errors the worker answers in JSON
    assert settings["preload_app"] is False  # each worker loads the bundle after the fork
    assert settings["reuse_port"] is True  # a socket per worker: connections spread over both
    assert settings["control_socket_disable"] is True  # it would write under $HOME
    assert (options.max_body_bytes, options.max_batch_rows) == (2 * 1024 * 1024, 5000)


def test_the_root_path_comes_from_the_environment_too(monkeypatch):
    monkeypatch.setenv("BATCOMPUTER_ROOT_PATH", "/models/crime")
    options = server_cli._parser().parse_args(["--bundle", "b"])
    assert options.root_path == "/models/crime"


@pytest.mark.parametrize(
    "flag", ["--workers", "--max-connections", "--max-body-bytes", "--max-batch-rows"]
)
def test_counts_below_one_are_refused(flag, capsys):
    with pytest.raises(SystemExit) as exit_:
        server_cli._parser().parse_args(["--bundle", "b", flag, "0"])
    assert exit_.value.code == 2
    assert "must be at least 1" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--keepalive", "--header-timeout", "--body-timeout"])
@pytest.mark.parametrize("value", ["0", "-1", "nan", "3601"])
def test_timeouts_must_be_a_positive_bounded_number_of_seconds(flag, value, capsys):
    with pytest.raises(SystemExit) as exit_:
        server_cli._parser().parse_args(["--bundle", "b", flag, value])
    assert exit_.value.code == 2
    assert "must be between 0 and 3600 seconds" in capsys.readouterr().err


def test_metrics_go_to_a_fresh_folder_in_tmpdir(monkeypatch, tmp_path):
    # Recorded by monkeypatch, so the variable the CLI sets is removed after the test.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "recorded")
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(server_cli.tempfile, "tempdir", None)
    folder = server_cli._prepare_metrics_dir()
    assert folder.startswith(str(tmp_path))


def test_a_given_metrics_folder_is_cleared_of_an_earlier_run(monkeypatch, tmp_path):
    stale = tmp_path / "counter_123.db"
    stale.write_bytes(b"old samples")
    keep = tmp_path / "notes.txt"
    keep.write_text("not ours")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    assert server_cli._prepare_metrics_dir() == str(tmp_path)
    assert not stale.exists() and keep.exists()


def test_a_port_in_use_is_refused_at_once(tmp_path, caplog):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        argv = ["--bundle", str(tmp_path), "--host", "127.0.0.1", "--port", str(port)]
        assert server_cli.main(argv) == 1
    assert f"cannot listen on 127.0.0.1:{port}" in caplog.text
    assert "Address already in use" in caplog.text
