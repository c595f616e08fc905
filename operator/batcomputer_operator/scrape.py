"""Reading a model pod's /metrics page over HTTP, for the rollout analysis.

The pods' own metrics endpoint is the source: no Prometheus needed. A pod is a
stranger as far as the operator is concerned (it runs whatever bundle was published),
so a scrape is bounded in time and size and anything but a 200 with Prometheus text is
a `ScrapeError` naming the pod, never an exception from deep inside a library.
"""

import http.client
import ipaddress
import time

from batcomputer_operator.analysis import MetricsError, Scrape, parse

SERVER_PORT = 8000
METRICS_PATH = "/metrics"
DEFAULT_TIMEOUT_SECONDS = 3.0
MAX_PAGE_BYTES = 2 * 1024 * 1024


class ScrapeError(RuntimeError):
    """A pod's metrics could not be read; the message names the pod and why."""


def scrape(
    pod_ip: str,
    *,
    port: int = SERVER_PORT,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    max_bytes: int = MAX_PAGE_BYTES,
) -> Scrape:
    """The parsed /metrics page of the server at `pod_ip`:`port`."""
    try:
        address = ipaddress.ip_address(pod_ip)
    except ValueError:
        raise ScrapeError(f"{pod_ip!r:.60} is not a pod IP address") from None
    where = f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"
    connection = http.client.HTTPConnection(str(address), port, timeout=timeout_seconds)
    try:
        connection.request("GET", METRICS_PATH, headers={"Accept": "text/plain"})
        response = connection.getresponse()
        page = _read_within(response, time.monotonic() + timeout_seconds, max_bytes + 1)
    except TimeoutError:
        raise ScrapeError(f"{where}{METRICS_PATH}: no answer within {timeout_seconds}s") from None
    except (OSError, http.client.HTTPException) as error:
        raise ScrapeError(f"{where}{METRICS_PATH}: {error or type(error).__name__}") from None
    finally:
        connection.close()
    if response.status != 200:
        raise ScrapeError(f"{where}{METRICS_PATH} answered {response.status}")
    if len(page) > max_bytes:
        raise ScrapeError(f"{where}{METRICS_PATH} is larger than {max_bytes} bytes")
    try:
        return parse(page.decode("utf-8"))
    except (UnicodeDecodeError, MetricsError) as error:
        raise ScrapeError(f"{where}{METRICS_PATH}: {error}") from None


def _read_within(response: http.client.HTTPResponse, deadline: float, limit: int) -> bytes:
    """The body, or as much as `limit`; a server dripping bytes cannot hold a scrape open
    past `deadline` (the socket timeout alone bounds each read, not their sum)."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        if time.monotonic() > deadline:
            raise TimeoutError
        chunk = response.read1(min(65536, limit - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
