"""The tracking API over HTTP on both databases: auth, dedupe, limits, all-or-nothing batches."""

from __future__ import annotations

import gzip

import orjson
import sqlalchemy as sa
from fastapi.testclient import TestClient

from winback.db.models import Event


def _events(engine: sa.Engine) -> list[Event]:
    with sa.orm.Session(engine) as session:
        return list(session.scalars(sa.select(Event).order_by(Event.id)))


def test_track_is_stored_once_even_when_retried(client: TestClient, write_key: str, engine: sa.Engine) -> None:
    message = {"messageId": "dup-1", "userId": "u1", "event": "Product Viewed", "properties": {"product_id": "p1"}}
    for _ in range(2):
        response = client.post("/v1/track", json=message, auth=(write_key, ""))
        assert response.status_code == 200
        assert response.json() == {"success": True}
    [event] = _events(engine)
    assert (event.message_id, event.event, event.user_id) == ("dup-1", "Product Viewed", "u1")
    assert event.properties == {"product_id": "p1"}
    assert event.processed_at is None


def test_short_paths_text_plain_and_write_key_in_body(client: TestClient, write_key: str, engine: sa.Engine) -> None:
    body = orjson.dumps({"anonymousId": "a1", "name": "Home", "writeKey": write_key, "messageId": "p-1"})
    response = client.post("/v1/p", content=body, headers={"Content-Type": "text/plain"})
    assert response.status_code == 200
    [event] = _events(engine)
    assert (event.type, event.name, event.anonymous_id) == ("page", "Home", "a1")


def test_gzip_batch(client: TestClient, write_key: str, engine: sa.Engine) -> None:
    batch = {"batch": [{"type": "track", "userId": "u", "event": f"E{i}", "messageId": f"g-{i}"} for i in range(3)]}
    response = client.post(
        "/v1/batch",
        content=gzip.compress(orjson.dumps(batch)),
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        auth=(write_key, ""),
    )
    assert response.status_code == 200
    assert [e.event for e in _events(engine)] == ["E0", "E1", "E2"]


def test_bad_batch_writes_nothing_and_names_the_index(client: TestClient, write_key: str, engine: sa.Engine) -> None:
    batch = {"batch": [{"type": "track", "userId": "u", "event": "Fine"}, {"type": "track", "userId": "u"}]}
    response = client.post("/v1/batch", json=batch, auth=(write_key, ""))
    assert response.status_code == 400
    assert response.json()["error"]["index"] == 1
    assert response.json()["error"]["field"] == "event"
    assert _events(engine) == []


def test_unknown_write_key_is_401(client: TestClient) -> None:
    response = client.post("/v1/track", json={"userId": "u", "event": "x"}, auth=("wk_nope", ""))
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


def test_malformed_json_is_400(client: TestClient, write_key: str) -> None:
    response = client.post("/v1/track", content=b"{not json", auth=(write_key, ""))
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]["message"]


def test_oversized_batch_is_413(client: TestClient, write_key: str, engine: sa.Engine) -> None:
    batch = {"batch": [{"type": "track", "userId": "u", "event": "E", "properties": {"x": "y" * 20_000}} for _ in range(30)]}
    response = client.post("/v1/batch", json=batch, auth=(write_key, ""))
    assert response.status_code == 413
    assert _events(engine) == []


def test_browser_settings_endpoint_points_at_this_server(client: TestClient, write_key: str) -> None:
    response = client.get(f"/v1/projects/{write_key}/settings")
    assert response.status_code == 200
    assert response.json()["integrations"]["Segment.io"]["apiKey"] == write_key
    assert response.json()["integrations"]["Segment.io"]["apiHost"] == "testserver/v1"


def test_cors_preflight_allows_browser_calls(client: TestClient) -> None:
    response = client.options(
        "/v1/t",
        headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"},
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] in ("*", "https://shop.example")
