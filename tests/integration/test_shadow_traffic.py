"""Shadow traffic between two real servers: the serving one copies predictions to the
candidate after answering, and its metrics compare the two; a dead or hanging candidate
never fails or slows a caller. The operator's analysis reads those metrics."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from _server_process import free_port, running_server, wait_until_workers_loaded

from batcomputer_dev.pytest_bundles import train_bundle
from batcomputer_operator import analysis

PREDICT = "/api/predict"
# Set to a folder (tests/data/rollout-metrics) to keep the scraped pages as unit test data.
CAPTURE = os.environ.get("BATCOMPUTER_CAPTURE_METRICS_TO")


def _passenger(age: int, sex: str = "male", pclass: str = "3rd") -> dict:
    return {
        "pclass": pclass,
        "sex": sex,
        "age": age,
        "sibsp": 0,
        "parch": 0,
        "fare": 8.05,
        "embarked": "Southampton",
    }


PASSENGERS = [
    _passenger(age, sex, pclass)
    for age in (4, 19, 30, 45, 62)
    for sex in ("female", "male")
    for pclass in ("1st", "3rd")
]


@pytest.fixture(scope="module")
def stump_bundle(tmp_path_factory):
    """Titanic retrained as depth-1 trees: same API, other probabilities."""
    out = tmp_path_factory.mktemp("stump")
    return train_bundle("titanic", "1.1.0", out, "--param", "max_depth=1")


def _scrape(url: str, capture_as: str | None = None) -> analysis.Scrape:
    text = httpx.get(url + "/metrics", timeout=5).text
    if CAPTURE and capture_as:
        (Path(CAPTURE) / capture_as).write_text(text)
    return analysis.parse(text)


def _wait_for(condition, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def _send(url: str, bodies) -> list[tuple[int, float]]:
    """Status and seconds of each prediction, over one keep-alive connection."""
    answers = []
    with httpx.Client(base_url=url, timeout=10) as client:
        for body in bodies:
            started = time.perf_counter()
            response = client.post(PREDICT, json=body)
            answers.append((response.status_code, time.perf_counter() - started))
    return answers


def _copies(scrape: analysis.Scrape, outcome: str) -> float:
    return scrape.total("batcomputer_shadow_requests_total", outcome=outcome)


def test_copies_reach_the_candidate_and_their_disagreement_is_measured(
    trained_bundles, stump_bundle, tmp_path
):
    with running_server(stump_bundle, tmp_path / "candidate") as candidate:
        wait_until_workers_loaded(candidate)
        with running_server(
            trained_bundles.titanic, tmp_path / "serving", "--shadow-url", candidate.url
        ) as serving:
            wait_until_workers_loaded(serving)
            before = _scrape(serving.url, "serving-before.txt")
            candidate_before = _scrape(candidate.url, "candidate-before.txt")
            batch = [PASSENGERS[:3]]
            answers = _send(serving.url, PASSENGERS + batch)
            assert [status for status, _ in answers] == [200] * (len(PASSENGERS) + 1)
            sent = len(PASSENGERS) + 1
            assert _wait_for(lambda: _copies(_scrape(serving.url), "compared") >= sent)
            grown = analysis.growth(before, _scrape(serving.url, "serving-after.txt"))
            candidate_after = _scrape(candidate.url, "candidate-after.txt")
    # Every copy arrived as a prediction of the candidate's own, and none failed.
    candidate_grown = analysis.growth(candidate_before, candidate_after)
    answered = analysis.canary_measurement(candidate_grown)
    assert (answered.requests, answered.errors) == (sent, 0)
    assert candidate_grown.total("batcomputer_predicted_rows_total") == len(PASSENGERS) + 3
    assert _copies(grown, "error") == 0 and _copies(grown, "dropped") == 0
    measured = analysis.shadow_measurement(grown)
    assert (measured.requests, measured.errors) == (sent, 0)
    assert measured.p99_seconds is not None and 0 < measured.p99_seconds < 1
    found = analysis.disagreement(grown)
    assert set(found.mean_by_flag) == {"died", "survived"}
    # Two flags: |Δp(died)| = |Δp(survived)| on every row.
    assert found.mean_by_flag["died"] == pytest.approx(found.mean_by_flag["survived"])
    assert 0.01 < found.worst < 0.5
    assert found.top_flag_changed is not None and 0 <= found.top_flag_changed < 0.5
    assert grown.total("batcomputer_shadow_rows_total") == len(PASSENGERS) + 3


def test_the_same_model_in_shadow_agrees_exactly_and_a_share_is_copied(trained_bundles, tmp_path):
    with running_server(trained_bundles.titanic, tmp_path / "candidate") as candidate:
        wait_until_workers_loaded(candidate)
        with running_server(
            trained_bundles.titanic,
            tmp_path / "serving",
            "--shadow-url",
            candidate.url,
            "--shadow-percent",
            "25",
        ) as serving:
            wait_until_workers_loaded(serving)
            bodies = PASSENGERS * 20  # 400 requests
            assert {status for status, _ in _send(serving.url, bodies)} == {200}
            time.sleep(2)  # copies still queued would be counted below
            grown = analysis.growth(None, _scrape(serving.url))
    copied = _copies(grown, "compared")
    # Binomial(400, 0.25): mean 100, standard deviation 8.7; six of them either side.
    assert 48 <= copied <= 152
    found = analysis.disagreement(grown)
    assert found.worst == 0.0 and found.top_flag_changed == 0.0
    max_seen = grown.select("batcomputer_shadow_probability_delta_max")
    assert max_seen == {}  # a gauge, not growth: left out of the difference


def test_a_server_shadowing_itself_copies_each_request_once(trained_bundles, tmp_path):
    # Copies carry a header, so they are answered but never copied on: no echo loop.
    port = free_port()
    with running_server(
        trained_bundles.titanic,
        tmp_path / "serving",
        *("--shadow-url", f"http://127.0.0.1:{port}"),
        port=port,
    ) as serving:
        wait_until_workers_loaded(serving)
        assert {status for status, _ in _send(serving.url, PASSENGERS)} == {200}
        assert _wait_for(lambda: _copies(_scrape(serving.url), "compared") >= len(PASSENGERS))
        time.sleep(1)
        scrape = _scrape(serving.url)
    assert _copies(scrape, "compared") == len(PASSENGERS)
    answered = scrape.total("batcomputer_http_requests_total", route=PREDICT)
    assert answered == 2 * len(PASSENGERS)  # the callers' and their copies, nothing more
    assert analysis.disagreement(scrape).worst == 0.0


def test_a_settings_file_starts_and_stops_shadowing_without_a_restart(trained_bundles, tmp_path):
    settings = tmp_path / "shadow.json"  # absent at first: no shadow
    with running_server(trained_bundles.titanic, tmp_path / "candidate") as candidate:
        wait_until_workers_loaded(candidate)
        with running_server(
            trained_bundles.titanic, tmp_path / "serving", "--shadow-config", str(settings)
        ) as serving:
            wait_until_workers_loaded(serving)
            pid = serving.process.pid
            _send(serving.url, PASSENGERS)
            assert _copies(_scrape(serving.url), "compared") == 0
            # As the kubelet updates a ConfigMap volume: a new file renamed into place.
            staged = tmp_path / "shadow.json.new"
            staged.write_text(json.dumps({"url": candidate.url, "percent": 100}))
            staged.rename(settings)
            # Each worker looks at the file every 5 s, on the requests it answers.
            copying = _wait_for(
                lambda: (
                    _send(serving.url, PASSENGERS[:2])
                    and _copies(_scrape(serving.url), "compared") > 0
                ),
                timeout=30,
            )
            assert copying
            staged.write_text("{}")
            staged.rename(settings)
            # A worker looks again on the requests it answers; which worker gets them is
            # the kernel's choice, so send until every copying worker has stopped.
            stopped = _wait_for(
                lambda: _send(serving.url, PASSENGERS) and _every_worker_stopped(serving),
                timeout=30,
            )
            assert stopped
            time.sleep(1)
            stopped_at = _copies(_scrape(serving.url), "compared")
            _send(serving.url, PASSENGERS)
            time.sleep(1)
            assert _copies(_scrape(serving.url), "compared") == stopped_at
            assert serving.process.pid == pid and serving.process.poll() is None
    log = serving.log_text()
    assert "copying 100 % of predictions to " + candidate.url in log
    assert "no longer copying predictions" in log


class _Silent:
    """A real listening socket that accepts connections and never answers."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            self.accepted.append(connection)

    def close(self) -> None:
        self.socket.close()
        for connection in self.accepted:
            connection.close()


@pytest.mark.parametrize("candidate", ["refusing connections", "never answering"])
def test_a_dead_candidate_never_fails_or_slows_a_caller(trained_bundles, tmp_path, candidate):
    silent = _Silent() if candidate == "never answering" else None
    url = silent.url if silent else f"http://127.0.0.1:{free_port()}"
    try:
        with running_server(
            trained_bundles.titanic,
            tmp_path / "serving",
            *("--shadow-url", url, "--shadow-timeout", "1"),
        ) as serving:
            wait_until_workers_loaded(serving)
            answers = _send(serving.url, PASSENGERS * 15)  # 300 requests
            assert {status for status, _ in answers} == {200}
            slowest = sorted(seconds for _, seconds in answers)[-3]
            # A copy waits up to a second for the candidate; the caller never does.
            assert slowest < 0.5, slowest
            failed = _wait_for(lambda: _copies(_scrape(serving.url), "error") >= 1, 15)
            scrape = _scrape(serving.url)
            assert failed
            assert _copies(scrape, "compared") == 0
            # Each copy either failed or was dropped because the queue was full.
            accounted = _copies(scrape, "error") + _copies(scrape, "dropped")
            assert accounted <= 300
            assert "Traceback" not in serving.log_text()
    finally:
        if silent:
            silent.close()


def test_an_unready_candidate_counts_as_failed_copies_and_as_its_own_5xx(trained_bundles, tmp_path):
    missing = tmp_path / "no-such-bundle"
    with running_server(missing, tmp_path / "candidate") as candidate:
        wait_until_workers_loaded(candidate)
        with running_server(
            trained_bundles.titanic, tmp_path / "serving", "--shadow-url", candidate.url
        ) as serving:
            wait_until_workers_loaded(serving)
            assert {status for status, _ in _send(serving.url, PASSENGERS)} == {200}
            assert _wait_for(lambda: _copies(_scrape(serving.url), "error") >= len(PASSENGERS))
            shadow = analysis.shadow_measurement(analysis.growth(None, _scrape(serving.url)))
            own = analysis.canary_measurement(
                analysis.growth(None, _scrape(candidate.url, "candidate-unready.txt"))
            )
    assert (shadow.requests, shadow.errors, shadow.disagreement) == (20, 20, None)
    assert (own.requests, own.errors) == (20, 20)


def test_big_bodies_are_dropped_once_a_workers_queue_holds_8_mib(trained_bundles, tmp_path):
    silent = _Silent()
    batch = PASSENGERS * 250  # 5,000 rows, about 550 KB of JSON
    size = len(json.dumps(batch))
    sent = 80
    try:
        with running_server(
            trained_bundles.titanic,
            tmp_path / "serving",
            *("--shadow-url", silent.url, "--shadow-timeout", "1"),
        ) as serving:
            wait_until_workers_loaded(serving)
            started = time.monotonic()
            assert {status for status, _ in _send(serving.url, [batch] * sent)} == {200}
            elapsed = time.monotonic() - started
            scrape = _scrape(serving.url)
    finally:
        silent.close()
    # Per worker at most 8 MiB of bodies wait, and its one sender takes a copy at most
    # every 1.2 s (1 s timeout against a silent shadow, then a 0.2 s pause).
    held = 2 * (8 * 1024 * 1024 // size + elapsed / 1.2 + 1)
    dropped = _copies(scrape, "dropped")
    assert dropped >= sent - held > 0, (dropped, held)
    assert dropped + _copies(scrape, "error") <= sent


def test_bad_shadow_settings_are_usage_errors(trained_bundles, tmp_path):
    import subprocess

    from _server_process import SERVER

    for flags, message in [
        (["--shadow-url", "ftp://candidate"], "not an http:// URL with a host"),
        (["--shadow-url", "http://"], "not an http:// URL with a host"),
        (["--shadow-url", "http://c", "--shadow-percent", "0"], "must be above 0"),
        (["--shadow-url", "http://c", "--shadow-percent", "101"], "at most 100"),
        (["--shadow-percent", "lots"], "--shadow-percent"),
        (["--shadow-url", "http://c", "--shadow-config", "s.json"], "not both"),
    ]:
        result = subprocess.run(
            [str(SERVER), "--bundle", str(trained_bundles.titanic), *flags],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 2, (flags, result.stderr)
        assert message in result.stderr, (flags, result.stderr)


def _every_worker_stopped(serving) -> bool:
    log = serving.log_text()
    return log.count("no longer copying predictions") >= log.count(
        "copying 100 % of predictions to "
    )
