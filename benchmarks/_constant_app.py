"""``batcomputer-server``'s command line, worker and limits, with an app that reads each
request body and answers one constant prediction.

What a request costs the HTTP stack alone (gunicorn, the gevent worker, the WSGI calls),
without validation, the model, metrics or drift: the most any app on this stack could
serve on the same cores.

    python benchmarks/_constant_app.py --bundle DIR --port 8000 --workers 2
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Any

from batcomputer_server import server_cli

# The shape of a one-row answer; "status" lets a readiness probe of /readyz pass too.
ANSWER = b'{"status":"ready","died":0.8123456789012345,"survived":0.1876543210987655}'
HEADERS = [("Content-Type", "application/json"), ("Content-Length", str(len(ANSWER)))]


def constant_answer(environ: dict, start_response: Callable[..., Any]) -> Iterable[bytes]:
    environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    start_response("200 OK", HEADERS)
    return [ANSWER]


if __name__ == "__main__":
    sys.exit(server_cli.main(load_app=lambda _options: constant_answer))
