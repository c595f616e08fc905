"""The server's error shape, as the Flask test client sees it."""

from __future__ import annotations


def assert_json_error(response, status, field=None, allowed=None):
    """A JSON ``status`` answer naming ``field`` (and ``allowed`` when given); its body."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) >= {"error", "field", "allowed"}
    assert body["error"]
    assert body["field"] == field
    if allowed is not None:
        assert body["allowed"] == allowed
    return body
